"""What the subcommands share (CLI process): -w and preset arguments, preset loading, error output.

Workspace resolution, preset loading with per-field errors, and rich output of engine errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from engine.data.tasks import DatasetError, custom_tasks
from engine.presets.config import ConfigError, ExperimentConfig, load_preset
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


def add_workspace_arg(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """Every subcommand takes ``-w/--workspace`` (default ``$LLMTUI_WORKSPACE``, else the current folder).

    On subcommands the default is suppressed so ``llmtui -w DIR models`` keeps the top-level value.
    """
    parser.add_argument("-w", "--workspace", metavar="DIR", default=None if top_level else argparse.SUPPRESS,
                        help="workspace folder (default: $LLMTUI_WORKSPACE, else the current folder)")


def preset_path(ws: Workspace, name: str) -> Path:
    """A preset argument: a file path as given, else a name in the workspace's ``experiments/``."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    candidate = ws.experiment_file(name)
    return candidate if candidate.is_file() else path


def load_preset_or_exit(ws: Workspace, name: str, overrides: list[str], *, json_errors: bool = False) -> ExperimentConfig:
    """Load and validate a preset, or print every problem and exit 2."""
    path = preset_path(ws, name)
    try:
        custom = tuple(custom_tasks(ws.datasets_dir))
        return load_preset(path, overrides, custom)
    except (ConfigError, DatasetError) as exc:
        problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [str(exc)]
        if json_errors:
            print_json({"valid": False, "file": str(path), "problems": problems})
        else:
            err_console.print(f"[bold red]invalid preset[/] {path}", highlight=False)
            for problem in problems:
                err_console.print(f"  • {problem}", highlight=False, markup=False)
        raise SystemExit(2) from None
