"""Resumable evaluation: the generations of one (model, test set) appended per finished batch; job processes.

``.llmtui/eval-partial/{model}/{test stem}.jsonl`` starts with a ``settings`` line (the model folder's
files, the test file, the limit, the prompt format record, a hash of every prompt — which also covers the
data and the chat template — and the decoding), then one line per finished item. A later evaluation with the same
settings skips those items; any other settings discard the file, with a log line saying what changed.
A line torn by a kill mid-write is ignored. The file is deleted once the metrics file is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from engine.workspace import Workspace, safe_name

PARTIAL_DIR = "eval-partial"
log = logging.getLogger("llmtui.eval")


def partial_path(ws: Workspace, model_name: str, test_file: str) -> Path:
    """Where the partial generations of ``model_name`` on ``test_file`` are kept."""
    return ws.state_dir / PARTIAL_DIR / safe_name(model_name) / f"{Path(test_file).stem}.jsonl"


def model_fingerprint(model_dir: Path) -> str:
    """A hash of the model folder's top-level files (name, size, modification time): a retrained or
    re-quantized model under the same name never reuses old generations."""
    parts = []
    for entry in sorted(Path(model_dir).iterdir()):
        if entry.is_file():
            stat = entry.stat()
            parts.append(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def prompts_hash(prompts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class PartialPredictions:
    """The partial file of one (model, test set) under fixed ``settings``."""

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path = Path(path)
        self.settings = settings
        self.resumed = 0

    def load(self) -> dict[int, dict[str, Any]]:
        """The finished rows (position in the test set → ``{"text", "tokens", "latency_s"}``) of an earlier
        attempt with the same settings; a file with other settings is discarded (and said so)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        rows: dict[int, dict[str, Any]] = {}
        header = _json(lines[0]) if lines else None
        self.settings = json.loads(json.dumps(self.settings))  # as it reads back (tuples become lists)
        if lines and (not isinstance(header, dict) or header.get("settings") != self.settings):
            old = header.get("settings") if isinstance(header, dict) else None
            log.warning("discarded the partial predictions in %s: %s", self.path, _what_changed(old, self.settings))
            lines = []
        for line in lines[1:]:
            row = _json(line)
            if isinstance(row, dict) and isinstance(row.get("i"), int):  # a torn last line is skipped
                rows[row["i"]] = {"text": row["text"], "tokens": row["tokens"], "latency_s": row["latency_s"]}
        self.resumed = len(rows)
        if rows:
            log.warning("resuming %s: %d item(s) already generated", self.path.stem, len(rows))
        self._start(rows)
        return rows

    def _start(self, rows: dict[int, dict[str, Any]]) -> None:
        """Rewrite the file with the header and the rows kept (dropping a torn line before appending)."""
        from engine.files import write_text

        text = json.dumps({"settings": self.settings}) + "\n"
        text += "".join(json.dumps({"i": i, **row}) + "\n" for i, row in sorted(rows.items()))
        write_text(self.path, text)

    def append(self, rows: list[tuple[int, Any]]) -> None:
        """Add finished rows ``(position, Generation)`` and push them to disk before returning."""
        text = "".join(json.dumps({"i": i, "text": g.text, "tokens": g.tokens, "latency_s": g.latency_s}) + "\n"
                       for i, g in rows)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:  # other test sets' files are still there
            pass


def _json(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _what_changed(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "it has no readable settings line"
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
               if old.get(key) != new.get(key)]
    return "the settings changed: " + "; ".join(changed)
