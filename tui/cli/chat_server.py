"""``llmtui chat-server MODEL``: the Chat screen's child process (JSON lines on stdin/stdout, see
:mod:`engine.runs.chat`). Runs in that child process, the only one of the TUI's that imports torch."""

from __future__ import annotations

import os
import sys

from tui.cli.common import add_workspace_arg, fail, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat-server", help="serve one model for the TUI's Chat screen (JSON lines on stdin/stdout)",
        description="Load MODEL (a name in Models/ or a folder) and answer JSON-line requests on stdin until "
                    "it closes. Used by the TUI's Chat screen; `llmtui chat` is the one for people.")
    add_workspace_arg(parser)
    parser.add_argument("model", help="a model name in Models/ or a model folder")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.models.resolve import ModelNotFoundError, resolve_model_folder
    from engine.runs.chat import serve

    ws = workspace_from(args)
    try:
        model_dir = resolve_model_folder(ws, args.model)
    except ModelNotFoundError as exc:
        fail(f"model {exc}")
    code = serve(model_dir, device=args.device)
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: the model's memory goes with the process, and tearing down torch's threads on a
    # busy machine was seen to keep a finished server alive for minutes after its input closed.
    os._exit(code)
