"""Helpers shared by the subcommands: workspace resolution and rich output of engine errors."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console

from engine.workspace import Workspace, resolve_workspace

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def workspace_from(args: Any, *, must_exist: bool = True) -> Workspace:
    """The workspace named by ``-w`` / ``$LLMTUI_WORKSPACE`` / the current folder."""
    ws = resolve_workspace(getattr(args, "workspace", None))
    if must_exist and not ws.root.is_dir():
        fail(f"workspace {ws.root} does not exist")
    return ws


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise SystemExit(code)


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour codes, so scripts can parse it)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
