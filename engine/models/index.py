"""An incremental view of the model scan: after the first scan, only changed folders are read again (TUI process).

The Models screen of a 5,000-model workspace refreshes whenever a model or a metrics file appears; a
full :func:`engine.models.scan.scan_models` each time would re-read every folder. :class:`ModelIndex`
remembers each folder's and each metrics file's stamp (inode, mtime, size) and re-inspects only the
models whose stamps moved. :meth:`ModelIndex.save` keeps the last scan in ``.llmtui/model_index.json``
(written atomically; this module is its only reader and writer) so the next start shows the models at
once and then refreshes. Runs in the TUI process (and anything else that lists models).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from engine.files import write_json
from engine.models.scan import ModelRecord, inspect_model
from engine.workspace import Workspace

Stamp = tuple[int, int, int]
#: Bumped when what a record holds or how it is read changes: an index of another format is ignored.
INDEX_FORMAT = 1


def index_path(ws: Workspace) -> Path:
    """Where the last scan is kept."""
    return ws.state_dir / "model_index.json"


def _stamp(entry: os.DirEntry) -> Stamp | None:
    try:
        info = entry.stat(follow_symlinks=True)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _listing(folder, wanted) -> dict[str, Stamp | None]:
    try:
        with os.scandir(folder) as it:
            return {key: _stamp(entry) for entry in it if (key := wanted(entry)) is not None}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _model_folder(entry: os.DirEntry) -> str | None:
    try:
        return entry.name if not entry.name.startswith(".") and entry.is_dir() else None
    except OSError:
        return None


def _metrics_file(entry: os.DirEntry) -> str | None:
    name = entry.name
    return name[:-5] if name.endswith(".json") and not name.startswith(".") else None


@dataclass
class ModelIndex:
    """Model records of one workspace, kept current by :meth:`refresh`."""

    ws: Workspace
    _records: dict[str, ModelRecord] = field(default_factory=dict, repr=False)
    _folders: dict[str, Stamp | None] = field(default_factory=dict, repr=False)
    _metrics: dict[str, Stamp | None] = field(default_factory=dict, repr=False)

    def refresh(self, *, force: bool = False) -> set[str]:
        """Re-read what changed since the last call (everything with ``force``); return the names whose
        record was added, removed or re-read."""
        folders = _listing(self.ws.models_dir, _model_folder)
        metrics = _listing(self.ws.metrics_dir, _metrics_file)
        changed = set(self._records) - set(folders)
        for name in changed:
            del self._records[name]
        for name, stamp in folders.items():
            if (force or name not in self._records or stamp != self._folders.get(name)
                    or metrics.get(name) != self._metrics.get(name)):
                self._records[name] = self._inspect(name, metrics)
                changed.add(name)
        self._folders, self._metrics = folders, metrics
        return changed

    def _inspect(self, name: str, metrics: dict[str, Stamp | None]) -> ModelRecord:
        path = self.ws.models_dir / name
        try:
            return inspect_model(self.ws, path, {name} if name in metrics else set())
        except Exception as exc:  # inspect_model is tolerant; this guards the refresh loop regardless
            return ModelRecord(name=name, path=str(path), status="broken", reason=f"cannot inspect: {exc}")

    def records(self) -> list[ModelRecord]:
        """Every record, sorted by name (case-insensitive) like ``scan_models``."""
        return sorted(self._records.values(), key=lambda r: r.name.lower())

    def get(self, name: str) -> ModelRecord | None:
        return self._records.get(name)

    def save(self) -> None:
        """Keep this scan for the next start (atomically; OSError when the state folder is not writable)."""
        write_json(index_path(self.ws), {
            "format": INDEX_FORMAT, "record_fields": sorted(f.name for f in fields(ModelRecord)),
            "folders": self._folders, "metrics": self._metrics,
            "records": [record.to_dict() for record in self._records.values()],
        })

    @classmethod
    def load(cls, ws: Workspace) -> "ModelIndex":
        """The index the last :meth:`save` kept; an empty one when there is none or it cannot be used
        (unreadable, another format): the next :meth:`refresh` then reads every folder."""
        try:
            data = json.loads(index_path(ws).read_text(encoding="utf-8"))
            if (data.get("format") != INDEX_FORMAT
                    or data.get("record_fields") != sorted(f.name for f in fields(ModelRecord))):
                return cls(ws)
            records = {r["name"]: ModelRecord(**r) for r in data["records"]}
            folders = {name: _as_stamp(stamp) for name, stamp in data["folders"].items()}
            metrics = {name: _as_stamp(stamp) for name, stamp in data["metrics"].items()}
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError):
            return cls(ws)
        return cls(ws, records, folders, metrics)


def _as_stamp(value) -> Stamp | None:
    return None if value is None else (int(value[0]), int(value[1]), int(value[2]))
