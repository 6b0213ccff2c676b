"""``llmtui init``: create the workspace layout in an existing folder (CLI process)."""

from __future__ import annotations

from tui.cli.common import add_workspace_arg, console, fail, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser("init", help="create the workspace layout (keeps what is there)")
    add_workspace_arg(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    ws = workspace_from(args, must_exist=False)
    if not ws.root.is_dir():
        fail(f"{ws.root} is not an existing folder")
    ws.init()
    console.print(f"workspace ready at [bold]{ws.root}[/]")
    return 0
