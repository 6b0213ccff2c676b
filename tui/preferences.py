"""The TUI's remembered choices per workspace (``.llmtui/tui.json``): read tolerantly, written atomically.
Runs in the TUI process; nothing else reads this file."""

from __future__ import annotations

import json
from typing import Any

from engine.files import write_json
from engine.workspace import Workspace

#: Choice → its value when nothing is remembered.
DEFAULTS: dict[str, Any] = {"results_percent": False, "demo_offer_seen": False}


def _path(ws: Workspace):
    return ws.state_dir / "tui.json"


def load_preferences(ws: Workspace) -> dict[str, Any]:
    """Every choice; a missing, unreadable or odd file gives the defaults (it is only a convenience)."""
    try:
        data = json.loads(_path(ws).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {key: data[key] if type(data.get(key)) is type(default) else default for key, default in DEFAULTS.items()}


def remember(ws: Workspace, **choices: Any) -> None:
    """Store ``choices`` beside the others (the state folder must exist; OSError otherwise)."""
    unknown = set(choices) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"unknown preference(s): {', '.join(sorted(unknown))}")
    write_json(_path(ws), {**load_preferences(ws), **choices})
