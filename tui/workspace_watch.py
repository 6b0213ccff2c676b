"""Cheap change detection for the app: one ``stat`` per watched path instead of re-reading folders (TUI).

A model folder appearing or disappearing (training and PTQ rename a staged folder into place) changes
``Models/``'s mtime; a metrics file written atomically changes ``Testing/metrics/``'s; every queue
commit touches ``queue.db`` or its WAL file. :func:`changed_parts` compares two readings.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.workspace import Workspace

#: The parts of a workspace the app watches; screens refresh on the ones they show.
PARTS = ("models", "metrics", "queue", "experiments")

Stamps = dict[str, tuple]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def workspace_stamps(ws: Workspace) -> Stamps:
    """One small tuple per watched part; equal tuples mean nothing there changed."""
    wal = ws.queue_db.with_name(ws.queue_db.name + "-wal")
    return {
        "models": (_stat(ws.models_dir),),
        "metrics": (_stat(ws.metrics_dir),),
        "queue": (_stat(ws.queue_db), _stat(wal)),
        "experiments": (_stat(ws.experiments_dir),),
    }


def changed_parts(before: Stamps, after: Stamps) -> frozenset[str]:
    """The parts whose stamps differ."""
    return frozenset(part for part in PARTS if before.get(part) != after.get(part))
