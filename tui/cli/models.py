"""``llmtui models``: every model folder with its tested/untested/broken status (CLI process)."""

from __future__ import annotations

from rich.table import Table

from tui.cli.common import add_workspace_arg, console, print_json, workspace_from
from tui.format import human_count, human_size, status_style


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the models in Models/ with their status")
    add_workspace_arg(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--status", choices=("tested", "untested", "broken"), help="only models with this status")
    parser.set_defaults(func=run)


#: Columns in the order they are dropped last to first when the terminal is narrow.
COLUMN_PRIORITY = ("name", "status", "quant", "dataset", "peft", "params", "size", "headline")


def _columns_that_fit(rows: list[dict[str, str]], width: int) -> list[str]:
    """The highest-priority columns whose natural widths fit ``width`` (name and status always stay)."""
    natural = {c: max([len(c), *(len(row[c]) for row in rows)]) + 3 for c in COLUMN_PRIORITY}
    chosen, used = [], 1
    for column in COLUMN_PRIORITY:
        if column in ("name", "status") or used + natural[column] <= width:
            chosen.append(column)
            used += natural[column]
    return chosen


def run(args) -> int:
    from engine.models.scan import scan_models

    ws = workspace_from(args)
    records = scan_models(ws)
    if args.status:
        records = [r for r in records if r.status == args.status]
    if args.json:
        print_json([r.to_dict() for r in records])
        return 0
    rows = []
    for r in records:
        headline = ", ".join(f"{k.removeprefix('test-').removesuffix('.parquet')} {v['metric']}="
                             f"{v['value']:.3f}" for k, v in r.headline.items() if v.get("value") is not None)
        rows.append({"name": r.name, "status": r.status + (f" ({r.reason})" if r.reason else ""),
                     "quant": r.quant_tag, "dataset": r.dataset, "peft": r.peft, "params": human_count(r.params),
                     "size": human_size(r.size_bytes), "headline": headline})
    columns = _columns_that_fit(rows, console.width)
    table = Table(title=f"{len(records)} models in {ws.models_dir}", title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column not in ("name", "headline", "status"))
    for row in rows:
        table.add_row(*[f"[{status_style(row[c].split()[0])}]{row[c]}[/]" if c == "status" else row[c]
                        for c in columns])
    console.print(table)
    return 0
