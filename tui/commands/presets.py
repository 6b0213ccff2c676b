"""Loading presets for subcommands: validation errors printed per field, exit code 2."""

from __future__ import annotations

from pathlib import Path

from engine.config import ConfigError, ExperimentConfig, load_preset
from engine.datasets import DatasetError, custom_tasks
from engine.workspace import Workspace
from tui.commands.common import err_console, print_json


def add_preset_args(parser, *, overwrite: bool = False) -> None:
    """The preset argument and ``--set SECTION.KEY=VALUE`` (and ``--overwrite`` where a model is written)."""
    parser.add_argument("preset", help="preset TOML file, or a preset name in the workspace's experiments/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a preset value (repeatable), e.g. --set train.max_steps=50")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace the model folder if it exists")


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
