"""An incremental view of the model registry: after the first scan, only changed folders are read again (TUI process).

The Models screen of a 5,000-model workspace refreshes whenever a model or a metrics file appears; a
full :func:`engine.results.registry.scan_models` each time would re-read every folder. :class:`ModelIndex`
remembers each folder's and each metrics file's stamp (inode, mtime, size) and re-inspects only the
models whose stamps moved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine.results.registry import ModelRecord, inspect_model
from engine.workspace import Workspace

Stamp = tuple[int, int, int]


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
