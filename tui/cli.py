"""The ``llmtui`` command: no subcommand opens the app; subcommands call the engine.

Each subcommand lives in ``tui/commands/<name>.py`` with ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``. Parsing and rich output stay here on the UI side.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from engine import __version__

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "init", "demo", "plan", "models", "data", "train", "quantize", "eval", "queue", "worker",
    "results", "compare",
)


def add_workspace_arg(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """Every subcommand takes ``-w/--workspace`` (default ``$LLMTUI_WORKSPACE``, else the current folder).

    On subcommands the default is suppressed so ``llmtui -w DIR models`` keeps the top-level value.
    """
    parser.add_argument("-w", "--workspace", metavar="DIR", default=None if top_level else argparse.SUPPRESS,
                        help="workspace folder (default: $LLMTUI_WORKSPACE, else the current folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmtui",
        description="Terminal experiment manager for LLM fine-tuning, quantization and evaluation. "
                    "Without a subcommand it opens the TUI on the workspace.")
    parser.add_argument("--version", action="version", version=f"llmtui {__version__}")
    add_workspace_arg(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tui.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tui.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from tui.commands.app import run_app

        return run_app(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
