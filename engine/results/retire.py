"""A replaced model's results set aside (job process): ``--overwrite`` makes a new model under the old name.

The old ``Testing/metrics/{name}.json`` and ``Testing/predictions/{name}/`` describe weights that are gone;
left in place they made the new model look evaluated ("already evaluated" in the pipeline's eval step).
They are renamed to hidden names beside themselves (never deleted: nothing is lost), which every reader skips.
"""

from __future__ import annotations

import os
import time

from engine.workspace import Workspace


def retire_results(ws: Workspace, name: str) -> list[str]:
    """Rename ``name``'s metrics file and predictions folder to ``.{name}.replaced-{stamp}``; the new names."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for path in (ws.metrics_file(name), ws.predictions_folder(name)):
        if path.exists():
            hidden = path.with_name(f".{path.stem if path.is_file() else path.name}.replaced-{stamp}{path.suffix}")
            os.replace(path, hidden)
            moved.append(str(hidden))
    return moved
