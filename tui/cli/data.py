"""``llmtui data``: list the workspace's datasets, or prepare the benchmarks from the Hub (CLI process)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from engine.data.tasks import BUILTIN_TASKS
from tui.cli.common import add_workspace_arg, console, fail, print_json, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="list datasets, or download and reduce the benchmarks")
    add_workspace_arg(parser)
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    listing = actions.add_parser("list", help="the tasks and their files")
    add_workspace_arg(listing)
    listing.add_argument("--json", action="store_true")
    prepare = actions.add_parser("prepare", help="download the four benchmarks from the Hub (needs network)")
    add_workspace_arg(prepare)
    prepare.add_argument("--datasets", default=",".join(BUILTIN_TASKS), help="comma-separated benchmarks")
    prepare.add_argument("--train-rows", type=int, default=1000)
    prepare.add_argument("--test-rows", type=int, default=200)
    parser.set_defaults(func=run)


def run(args) -> int:
    ws = workspace_from(args)
    if args.data_action == "prepare":
        from engine.runs.prepare import PrepareError, prepare_benchmarks

        try:
            with console.status("downloading and reducing benchmarks…"):
                paths = prepare_benchmarks(ws.datasets_dir, args.datasets.split(","), args.train_rows, args.test_rows)
        except PrepareError as exc:
            fail(str(exc), code=1)
        for path in paths:
            console.print(f"wrote {path}")
        return 0
    from engine.data.tasks import DatasetError, task_registry

    try:
        tasks = task_registry(ws.datasets_dir)
    except DatasetError as exc:
        fail(str(exc))
    rows = [{"name": t.name, "kind": t.kind, "train_file": t.train_file, "test_file": t.test_file,
             "train_present": (ws.datasets_dir / t.train_file).is_file(),
             "test_present": (ws.datasets_dir / t.test_file).is_file(), "builtin": t.builtin} for t in tasks.values()]
    if getattr(args, "json", False):
        print_json(rows)
        return 0
    table = Table("name", "kind", "train", "test", title=f"datasets in {ws.datasets_dir}", title_justify="left")
    for row in rows:
        mark = {True: ("✓", "green"), False: ("missing", "red")}
        table.add_row(Text(row["name"]), Text(row["kind"]),
                      Text.assemble(row["train_file"], " ", mark[row["train_present"]]),
                      Text.assemble(row["test_file"], " ", mark[row["test_present"]]))
    console.print(table)
    return 0
