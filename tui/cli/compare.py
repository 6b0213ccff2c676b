"""``llmtui compare A B [C …]``: metrics side by side with paired significance tests, flipped items and the
comparability guard; ``llmtui compare --lineage MODEL``: the degradation matrix of a model's descendants
(CLI process)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tui.cli.common import add_workspace_arg, console, err_console, fail, workspace_from
from tui.cli.results import add_output_args, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare models with paired significance tests (McNemar, paired bootstrap)",
        description="Every metric of every test set the first model shares with another, with "
                    "deltas against the first model. Accuracy-type metrics get the exact McNemar "
                    "test, F1/EM/MCC/macro-F1 a paired bootstrap, both from the per-item "
                    "predictions in Testing/predictions (or lm-eval samples); where those are missing "
                    "the statistics are marked unavailable with the reason. Runs that did not see the "
                    "items the same way (prompt format, decoding, dataset file, answer extraction, "
                    "backend) are flagged with a warning.")
    add_workspace_arg(parser)
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="two or more model names (the first is the reference)")
    add_output_args(parser, ("json", "csv", "markdown", "latex"))
    parser.add_argument("--resamples", type=int, default=1000, metavar="N",
                        help="bootstrap resamples (at least 1000; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--flips", action="store_true",
                        help="list the flipped items: right for one model and wrong for the other")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="with --flips: at most N items per test set and direction")
    parser.add_argument("--strict", action="store_true",
                        help="treat comparability warnings as an error (exit 2)")
    parser.add_argument("--lineage", metavar="MODEL",
                        help="the degradation matrix: MODEL and every descendant (fine-tunes, PTQ variants) "
                             "as rows, each test set's headline metric with the delta against the row's parent")
    parser.set_defaults(func=run, format=None)


def run(args) -> int:
    from engine.results.compare import CompareError, compare
    from engine.results.export import COMPARISON_RENDERERS, comparison_notes, flips_text

    ws = workspace_from(args)
    if args.limit is not None and args.limit < 0:
        fail(f"--limit must be 0 or more, got {args.limit}")
    if args.lineage:
        return run_lineage(args, ws)
    try:
        comparison = compare(ws, args.models, resamples=args.resamples, seed=args.seed)
    except CompareError as exc:
        fail(str(exc))
    guard = comparison.guard_warnings
    if args.strict and guard:
        for message in guard:
            err_console.print(f"[bold red]not comparable:[/] {message}", highlight=False)
        fail(f"{len(guard)} comparability warning(s) and --strict was given")
    for message in comparison.warnings:
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
    if args.format:
        if args.format == "json" and args.limit is not None:
            for flips in comparison.flips:
                flips.reference_only = flips.reference_only[:args.limit]
                flips.model_only = flips.model_only[:args.limit]
        emit(COMPARISON_RENDERERS[args.format](comparison), args.output)
        return 0
    if not comparison.datasets:
        console.print("[yellow]no test set is shared by the first model and another one[/]")
    for dataset in comparison.datasets:
        console.print(_dataset_table(comparison, dataset))
    for note in comparison_notes(comparison):
        console.print(Text(note, style="dim"))
    if args.flips and not comparison.flips:
        console.print("[yellow]no flipped items: no test set has per-item predictions of the same items for "
                      "the reference and another model[/]")
    elif args.flips:
        console.print(Text(flips_text(comparison, args.limit, console.width)), soft_wrap=True)
    return 0


def run_lineage(args, ws) -> int:
    from engine.results.export import LINEAGE_RENDERERS, lineage_cell_text, lineage_notes
    from engine.results.lineage import LineageError, lineage_matrix

    if args.models:
        fail("--lineage takes one model; leave out the other model names")
    if args.format == "csv":
        fail("--lineage exports as --json, --markdown or --latex")
    try:
        matrix = lineage_matrix(ws, args.lineage, resamples=args.resamples, seed=args.seed)
    except LineageError as exc:
        fail(str(exc))
    warned = [w for row in matrix.rows for cell in row.cells.values() for w in cell.warnings]
    if args.strict and warned:
        fail(f"{len(warned)} comparability warning(s) in the lineage and --strict was given")
    if args.format:
        emit(LINEAGE_RENDERERS[args.format](matrix), args.output)
        return 0
    table = Table("model", "parent", *[f"{name}\n{metric}" for name, metric in matrix.columns.items()],
                  title=Text(f"lineage of {matrix.root}"), title_justify="left")
    for row in matrix.rows:
        cells = []
        for name in matrix.columns:
            cell = row.cells[name]
            text = Text(lineage_cell_text(cell))
            if cell.significant and cell.delta is not None:
                text.stylize("bold red" if cell.delta < 0 else "bold green")
            cells.append(text)
        table.add_row(Text("  " * row.depth + row.model + ("" if row.tested else " (untested)")),
                      row.parent or "–", *cells)
    console.print(table)
    for note in lineage_notes(matrix):
        console.print(Text(note, style="dim"))
    return 0


def _dataset_table(comparison, dataset) -> Table:
    from engine.results.export import WARNING_MARK, format_cell, format_delta, format_interval, format_p

    others = [m for m in dataset.models if m != comparison.baseline]
    title = f"{dataset.name} ({dataset.kind or 'unknown kind'})"
    if dataset.guard:
        title = f"{WARNING_MARK} {title}: comparability warnings below"
    table = Table("metric", *map(escape, dataset.models), title=escape(title), title_justify="left",
                  title_style="bold yellow" if dataset.guard else None)
    for model in others:
        prefix = f"{escape(model)}\n" if len(others) > 1 else ""
        table.add_column(f"{prefix}Δ", justify="right")
        table.add_column(f"{prefix}{comparison.confidence:.0%} CI / b, c", justify="right")
        table.add_column(f"{prefix}p", justify="right")
    for metric in dataset.metrics:
        cells = [Text(metric.metric), *[format_cell(metric.values.get(m)) or "–" for m in dataset.models]]
        pairs = {p.model: p for p in metric.pairs}
        for model in others:
            pair = pairs[model]
            delta = Text(format_delta(pair.delta))
            if pair.significant and pair.delta is not None and metric.direction:
                better = (pair.delta > 0) == (metric.direction == "higher")
                delta.stylize("bold green" if better else "bold red")
            cells += [delta, format_interval(pair), format_p(pair)]
        table.add_row(*cells)
    return table
