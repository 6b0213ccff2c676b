"""``llmtui results``: the results table of every metrics file (and lm-eval output), on screen or exported
(CLI process)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from engine.data.tasks import DISPLAY_ORDER, builtin_metric_columns
from tui.cli.common import add_workspace_arg, console, err_console, fail, workspace_from

#: What the on-screen table shows unless ``--columns`` asks for more, in priority order: columns
#: are dropped from the end until the table fits the terminal.
SCREEN_COLUMNS = (
    "model",
    *builtin_metric_columns(),
    "overall_accuracy", "latency_mean_s", "eval_peak_vram_allocated_gb", "train_peak_vram_allocated_gb",
    "quant_tag",
)


def add_output_args(parser, formats: tuple[str, ...]) -> None:
    """The mutually exclusive export-format flags and ``-o FILE`` (shared with ``llmtui compare``)."""
    group = parser.add_mutually_exclusive_group()
    for name in formats:
        group.add_argument(f"--{name}", dest="format", action="store_const", const=name,
                           help=f"print the table as {name.upper() if name != 'markdown' else 'Markdown'}")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path,
                        help="write the export to FILE instead of printing it")


def split_list(values: list[str] | None) -> list[str] | None:
    """``--models a b,c`` → ``[a, b, c]``; None when not given."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def emit(text: str, output: Path | None) -> None:
    """Print an export, or write it atomically to ``output``."""
    if output is None:
        console.file.write(text)
        return
    from engine.files import write_text

    write_text(output, text)
    err_console.print(f"wrote {output}", highlight=False)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "results", help="the results table of Testing/metrics (CSV, Markdown, LaTeX, JSON exports)",
        description="One row per metrics file in Testing/metrics, llmtui's and the old research "
                    "scripts' alike. Exports keep full precision (CSV/JSON) or mark the best value "
                    "per column in bold (Markdown/LaTeX).")
    add_workspace_arg(parser)
    add_output_args(parser, ("json", "csv", "markdown", "latex"))
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="only these models (names or patterns like 'Qwen3-8B*', comma-separated too)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME",
                        help=f"only these test sets ({', '.join(DISPLAY_ORDER)}, or a custom name)")
    parser.add_argument("--columns", nargs="+", metavar="PATTERN",
                        help="only the columns matching these patterns (e.g. '*__accuracy' 'boolq__*')")
    parser.add_argument("--import", dest="import_path", metavar="PATH", type=Path,
                        help="first copy an lm-evaluation-harness output folder (results_*.json, "
                             "samples_*.jsonl) into Testing/lm-eval/")
    parser.set_defaults(func=run, format=None)


def run(args) -> int:
    from engine.results.export import RESULTS_RENDERERS
    from engine.results.metrics_files import results_table

    ws = workspace_from(args)
    if args.import_path is not None:
        from engine.results.lmeval import LmEvalError, import_output

        try:
            written = import_output(ws, args.import_path)
        except (LmEvalError, OSError) as exc:
            fail(str(exc))
        err_console.print(f"imported {len(written)} file(s) into {ws.lm_eval_dir}", highlight=False)
    columns = split_list(args.columns)
    table = results_table(ws, models=split_list(args.models), datasets=split_list(args.datasets),
                          columns=columns)
    for message in table.errors:
        err_console.print(f"[red]unreadable:[/] {message}", highlight=False)
    for message in table.warnings:
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
    if args.format:
        emit(RESULTS_RENDERERS[args.format](table), args.output)
        return 0
    hidden = 0
    if not columns:
        from engine.results.lmeval import DATASET_PREFIX

        # llmtui's screen columns, then lm-evaluation-harness tasks' metrics before the model-level ones.
        lm_eval = [c.key for c in table.columns if (c.dataset or "").startswith(DATASET_PREFIX)
                   and c.metric.startswith(("acc", "exact_match"))]
        split = SCREEN_COLUMNS.index("overall_accuracy")
        order = [*SCREEN_COLUMNS[:split], *lm_eval, *SCREEN_COLUMNS[split:]]
        table.columns = [c for c in table.columns if c.key in order and
                         (c.key == "model" or any(row.get(c.key) is not None for row in table.rows))]
        table.columns.sort(key=lambda c: order.index(c.key))
        hidden = _fit_to_screen(table, console.width)
    console.print(_rich_table(table, ws.metrics_dir))
    if hidden:
        console.print(f"[dim]{hidden} more column(s) do not fit: widen the terminal, choose with "
                      f"--columns, or export with --csv/--markdown/--latex/--json[/]")
    return 0


def _fit_to_screen(table, width: int) -> int:
    """Drop the last screen columns until the table fits ``width``; returns how many were dropped."""
    from engine.results.export import format_cell

    def needed(column) -> int:
        header = max(len(part) for part in column.key.split("__"))
        cells = max((len(format_cell(row.get(column.key)) or "-") for row in table.rows), default=1)
        return max(header, cells) + 3

    dropped = 0
    while len(table.columns) > 2 and sum(map(needed, table.columns)) + 1 > width:
        table.columns.pop()
        dropped += 1
    return dropped


def _rich_table(table, folder) -> Table:
    from engine.results.export import best_rows, format_cell

    view = Table(title=Text(f"{len(table.rows)} results in {folder}"), title_justify="left")
    for column in table.columns:
        if column.key == "model":
            view.add_column("model", no_wrap=True)
        else:
            view.add_column(column.key.replace("__", "\n"), justify="right")
    best = {(i, j) for j, c in enumerate(table.columns)
            for i in best_rows([row.get(c.key) for row in table.rows], c.direction)}
    for i, row in enumerate(table.rows):
        cells = [format_cell(row.get(c.key)) or "–" for c in table.columns]
        view.add_row(*[Text(cell, style="bold green" if (i, j) in best else "") for j, cell in enumerate(cells)])
    return view
