"""The ``llmtui`` command: no subcommand opens the app; subcommands call the engine (CLI and job processes).

Each subcommand lives in ``tui/cli/<name>.py`` with ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``; :data:`COMMANDS` imports them by name, so a missing module fails at once
and ``lint-imports`` sees every edge. Parsing and rich output stay here on the UI side.
"""

from __future__ import annotations

import argparse
import sys

from engine import __version__
from tui.cli import (chat, chat_server, compare, data, demo, doctor, eval, init, models, plan, power, quantize, queue,
                     results, train, worker)
from tui.cli.common import add_workspace_arg

#: The subcommand modules, in the order ``--help`` lists them.
COMMANDS = (init, demo, plan, models, data, train, quantize, eval, queue, worker, results, compare, power, chat,
            chat_server, doctor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmtui",
        description="Terminal experiment manager for LLM fine-tuning, quantization and evaluation. "
                    "Without a subcommand it opens the TUI on the workspace.")
    parser.add_argument("--version", action="version", version=f"llmtui {__version__}")
    add_workspace_arg(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from engine.jobs.requeue import ignore_stop_signal

    ignore_stop_signal()  # only a training acts on it (it installs its own handler); nothing else dies of it
    if args.command is None:
        from tui.cli.app import run_app

        return run_app(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
