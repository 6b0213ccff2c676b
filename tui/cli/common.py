"""What the subcommands share (CLI process): -w and preset arguments, preset loading, error output.

Workspace resolution, preset loading with per-field errors, and rich output of engine errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from engine.checked import one_line
from engine.data.tasks import DatasetError, custom_tasks
from engine.presets.config import ConfigError, ExperimentConfig, load_preset
from engine.workspace import UnsafeNameError, Workspace, resolve_workspace

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def workspace_from(args: Any, *, must_exist: bool = True) -> Workspace:
    """The workspace named by ``-w`` / ``$LLMTUI_WORKSPACE`` / the current folder."""
    ws = resolve_workspace(getattr(args, "workspace", None))
    if must_exist and not ws.root.is_dir():
        fail(f"workspace {ws.root} does not exist")
    return ws


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` (plain text: a name with ``[`` is not markup) as an error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
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


def add_trust_arg(parser: argparse.ArgumentParser) -> None:
    """``--trust-remote-code``: the only way (besides a preset's ``model.trust_remote_code``) to run a model
    folder's own Python code; a folder's metadata never switches it on."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model folder's own Python code (config.json auto_map) to run")


def preset_candidates(ws: Workspace, name: str) -> list[Path]:
    """Where a preset argument may be, in the order looked in: the path as given (from the current folder),
    the same relative path in the workspace (``-w``), then a preset name in the workspace's ``experiments/``."""
    path = Path(name).expanduser()
    candidates = [path]
    if not path.is_absolute() and (ws.root / path).absolute() != path.absolute():
        candidates.append(ws.root / path)
    if os.sep not in name and "/" not in name:
        try:
            candidates.append(ws.experiment_file(name))
        except UnsafeNameError:  # nothing usable as a name: the paths above are all there is
            pass
    return list(dict.fromkeys(candidates))


def preset_path(ws: Workspace, name: str) -> Path:
    """A preset argument: the first of :func:`preset_candidates` that is a file, else exit 2 naming them all."""
    candidates = preset_candidates(ws, name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    fail(preset_not_found(name, candidates))


def preset_not_found(name: str, candidates: list[Path]) -> str:
    return f"preset {name} not found (looked in {', '.join(str(c) for c in candidates)})"


def print_problems(what: str, path: Path, problems: list[str]) -> None:
    """One line per problem, each naming the file and the field (``error: invalid WHAT FILE: field: why``)."""
    for problem in problems:
        err_console.print(f"[bold red]error:[/] invalid {what} {escape(one_line(f'{path}: {problem}'))}",
                          highlight=False)


def load_preset_or_exit(ws: Workspace, name: str, overrides: list[str], *, json_errors: bool = False) -> ExperimentConfig:
    """Load and validate a preset, or print every problem and exit 2."""
    if json_errors and not any(c.is_file() for c in preset_candidates(ws, name)):
        print_json({"valid": False, "file": name, "problems": [preset_not_found(name, preset_candidates(ws, name))]})
        raise SystemExit(2)
    path = preset_path(ws, name)
    try:
        custom = tuple(custom_tasks(ws.datasets_dir))
        return load_preset(path, overrides, custom)
    except (ConfigError, DatasetError) as exc:
        problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [str(exc)]
        exit_invalid("preset", path, problems, json_errors=json_errors)


def exit_invalid(what: str, path: Path, problems: list[str], *, json_errors: bool = False) -> NoReturn:
    """Print every problem of an invalid file (as JSON when asked) and exit 2."""
    if json_errors:
        print_json({"valid": False, "file": str(path), "problems": problems})
    else:
        print_problems(what, path, problems)
    raise SystemExit(2)
