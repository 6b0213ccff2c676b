"""``llmtui compare A B [C …]``: metrics side by side with paired significance tests (CLI process)."""

from __future__ import annotations

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
                    "predictions in Testing/predictions; where those are missing the statistics "
                    "are marked unavailable with the reason.")
    add_workspace_arg(parser)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="two or more model names (the first is the reference)")
    add_output_args(parser, ("json", "csv", "markdown", "latex"))
    parser.add_argument("--resamples", type=int, default=1000, metavar="N",
                        help="bootstrap resamples (at least 1000; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(func=run, format=None)


def run(args) -> int:
    from engine.results.compare import CompareError, compare
    from engine.results.export import COMPARISON_RENDERERS, comparison_notes

    ws = workspace_from(args)
    try:
        comparison = compare(ws, args.models, resamples=args.resamples, seed=args.seed)
    except CompareError as exc:
        fail(str(exc))
    for message in comparison.warnings:
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
    if args.format:
        emit(COMPARISON_RENDERERS[args.format](comparison), args.output)
        return 0
    if not comparison.datasets:
        console.print("[yellow]no test set is shared by the first model and another one[/]")
    for dataset in comparison.datasets:
        console.print(_dataset_table(comparison, dataset))
    for note in comparison_notes(comparison):
        console.print(Text(note, style="dim"))
    return 0


def _dataset_table(comparison, dataset) -> Table:
    from engine.results.export import format_cell, format_delta, format_interval, format_p

    others = [m for m in dataset.models if m != comparison.baseline]
    table = Table("metric", *dataset.models, title=f"{dataset.name} ({dataset.kind or 'unknown kind'})",
                  title_justify="left")
    for model in others:
        prefix = f"{model}\n" if len(others) > 1 else ""
        table.add_column(f"{prefix}Δ", justify="right")
        table.add_column(f"{prefix}{comparison.confidence:.0%} CI / b, c", justify="right")
        table.add_column(f"{prefix}p", justify="right")
    for metric in dataset.metrics:
        cells = [metric.metric, *[format_cell(metric.values.get(m)) or "–" for m in dataset.models]]
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
