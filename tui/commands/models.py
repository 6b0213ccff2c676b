"""``llmtui models``: every model folder with its tested/untested/broken status."""

from __future__ import annotations

from rich.table import Table

from tui.cli import add_workspace_arg
from tui.commands.common import console, print_json, workspace_from
from tui.format import human_count, human_size, status_style


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the models in Models/ with their status")
    add_workspace_arg(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--status", choices=("tested", "untested", "broken"), help="only models with this status")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.registry import scan_models

    ws = workspace_from(args)
    records = scan_models(ws)
    if args.status:
        records = [r for r in records if r.status == args.status]
    if args.json:
        print_json([r.to_dict() for r in records])
        return 0
    table = Table("name", "status", "dataset", "peft", "quant", "params", "size", "headline",
                  title=f"{len(records)} models in {ws.models_dir}", title_justify="left")
    for r in records:
        headline = ", ".join(f"{k.removeprefix('test-').removesuffix('.parquet')} {v['metric']}="
                             f"{v['value']:.3f}" for k, v in r.headline.items() if v.get("value") is not None)
        status = f"[{status_style(r.status)}]{r.status}[/]" + (f" ({r.reason})" if r.reason else "")
        table.add_row(r.name, status, r.dataset, r.peft, r.quant_tag, human_count(r.params),
                      human_size(r.size_bytes), headline)
    console.print(table)
    return 0
