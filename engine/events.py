"""The JSONL event stream: written by the job process (train/quantize/eval), read by the worker, TUI and CLI.

Each line is one JSON object with at least ``t`` (unix time) and ``kind`` (an :class:`EventKind`);
:data:`EVENT_FIELDS` documents the other fields of each kind. Writers flush after every line.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class EventKind(StrEnum):
    """THE event kinds (a StrEnum: members compare equal to, and serialize as, their strings)."""

    START = "start"
    TRAIN_STEP = "train_step"
    EVAL = "eval"
    EVAL_PROGRESS = "eval_progress"
    QUANTIZE_PROGRESS = "quantize_progress"
    SAVED = "saved"
    WARNING = "warning"
    ERROR = "error"
    #: Training stopped on the stop-and-requeue signal (see :mod:`engine.jobs.requeue`); the job runs again.
    STOPPED = "stopped"
    DONE = "done"
    #: Console-only tick after an optimizer step (shown by ``llmtui train``; never written to a file).
    PROGRESS = "progress"


#: The schema: what each kind carries besides ``t`` and ``kind`` (``?`` = may be absent or null).
EVENT_FIELDS: dict[EventKind, str] = {
    EventKind.START: "model, output, then per command: base_model…(train) | source, source_kind, method, bits, "
                     "group_size, device (quantize)",
    EventKind.TRAIN_STEP: "step, max_steps, epoch?, loss?, learning_rate?, grad_norm?, tokens_per_s?, gpu_mem_gb?",
    EventKind.EVAL: "step, max_steps, eval_* metrics (the trainer's evaluation)",
    EventKind.EVAL_PROGRESS: "model, dataset (test file), done, total",
    EventKind.QUANTIZE_PROGRESS: "stage (prepare | calibration | quantize | save | done), done, total",
    EventKind.SAVED: "path (the finished model folder or metrics file)",
    EventKind.WARNING: "message (one clear line; the run goes on), model? (eval)",
    EventKind.ERROR: "message (one clear line), model? (eval)",
    EventKind.STOPPED: "message (the step it stopped at)",
    EventKind.DONE: "the command's result: model, output… (train/quantize) | evaluated, failed (eval)",
    EventKind.PROGRESS: "step, max_steps",
}


class EventWriter:
    """Append events to a JSONL file, one flushed line each; a ``None`` path writes nothing."""

    def __init__(self, path: Path | str | None):
        self.path = Path(path) if path else None
        self._handle = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")

    def emit(self, kind: EventKind, **data: Any) -> dict[str, Any]:
        event = {"t": round(time.time(), 3), "kind": EventKind(kind), **data}
        if self._handle is not None:
            self._handle.write(json.dumps(event, default=str) + "\n")
            self._handle.flush()
        return event

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def events_path_from_env() -> Path | None:
    """The events file the job runner asked for through ``$LLMTUI_EVENTS``, if any."""
    value = os.environ.get("LLMTUI_EVENTS")
    return Path(value) if value else None


@dataclass
class EventTail:
    """Incremental reader: each :meth:`read_new` returns only the complete lines added since last time."""

    path: Path
    offset: int = 0
    _partial: bytes = field(default=b"", repr=False)

    def read_new(self, max_bytes: int = 4 << 20) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(max_bytes)
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def read_events(path: Path | str) -> list[dict[str, Any]]:
    """Every well-formed event in a file (broken lines are skipped)."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    return EventTail(Path(path)).read_new(max_bytes=size + 1)  # read(2**40) would allocate 1 TiB up front
