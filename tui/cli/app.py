"""``llmtui`` with no subcommand: open the app on the workspace (CLI process, which becomes the TUI).

Set ``LLMTUI_NO_AUTOSTART=1`` to keep the app from starting the queue worker when it queues jobs
(tests do; start one yourself with ``llmtui worker``).
"""

from __future__ import annotations

import os

from tui.cli.common import fail, workspace_from

NO_AUTOSTART_ENV = "LLMTUI_NO_AUTOSTART"


def autostart_enabled() -> bool:
    """False when ``$LLMTUI_NO_AUTOSTART`` is set to anything but "", "0" or "false"."""
    return os.environ.get(NO_AUTOSTART_ENV, "").strip().lower() in ("", "0", "false", "no")


def run_app(args) -> int:
    ws = workspace_from(args)
    missing = ws.missing_parts()
    if missing:
        fail(f"{ws.root} is not an llmtui workspace: missing {', '.join(missing)}.\n"
             f"  create the layout with:  llmtui -w {ws.root} init\n"
             f"  or try the demo:         llmtui -w DIR demo")
    from tui.app import LlmTuiApp

    LlmTuiApp(ws, autostart_worker=autostart_enabled()).run()
    return 0
