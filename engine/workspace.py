"""The workspace folder layout, llmtui's private state folder, and safe name → path mapping (any process)."""

from __future__ import annotations

import os
import stat
import re
from dataclasses import dataclass
from pathlib import Path

WORKSPACE_ENV = "LLMTUI_WORKSPACE"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@-]+")


class UnsafeNameError(ValueError):
    """A name taken from user input would escape its folder or is empty."""


def safe_name(name: str) -> str:
    """Return ``name`` made safe as a single path component.

    Separators, NUL and other odd characters become ``_``; leading dots are stripped so a name can
    never be ``.``, ``..`` or hidden. Raises :class:`UnsafeNameError` when nothing usable is left.
    """
    cleaned = _UNSAFE.sub("_", str(name).replace("\x00", "")).strip("._ ")
    if not cleaned or set(cleaned) <= {"_"}:
        raise UnsafeNameError(f"unusable name {name!r}: it must contain letters or digits")
    return cleaned[:200]


@dataclass(frozen=True)
class Workspace:
    """A research workspace: ``Datasets/``, ``Models/``, ``Testing/``, ``experiments/``, ``.llmtui/``."""

    root: Path

    @property
    def datasets_dir(self) -> Path:
        return self.root / "Datasets"

    @property
    def models_dir(self) -> Path:
        return self.root / "Models"

    @property
    def testing_dir(self) -> Path:
        return self.root / "Testing"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "Testing" / "metrics"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "Testing" / "predictions"

    @property
    def lm_eval_dir(self) -> Path:
        """lm-evaluation-harness output folders (read by engine.results.lmeval)."""
        return self.root / "Testing" / "lm-eval"

    @property
    def experiments_dir(self) -> Path:
        return self.root / "experiments"

    @property
    def state_dir(self) -> Path:
        return self.root / ".llmtui"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def queue_db(self) -> Path:
        return self.state_dir / "queue.db"

    def init(self) -> "Workspace":
        """Create the layout in place; existing files and folders are left untouched."""
        for folder in (self.datasets_dir, self.models_dir, self.metrics_dir, self.predictions_dir,
                       self.experiments_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.jobs_dir.mkdir(mode=0o700, exist_ok=True)
        return self

    def unsafe_state_folder(self) -> tuple[str, str] | None:
        """THE rule for ``.llmtui/``: (problem, fix) when it is owned by another user or writable by group or
        others, who could then put commands in the queue the worker runs as you; None when it is safe."""
        try:
            info = self.state_dir.lstat()
        except FileNotFoundError:
            return None
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid != os.getuid():
            return (f"{self.state_dir} is owned by uid {info.st_uid}, not you (uid {os.getuid()}): its queue could "
                    f"make you run another user's commands", f"mv {self.state_dir} {self.state_dir}.theirs")
        if mode & 0o022:
            return (f"{self.state_dir} has mode {mode:o}: group or others can write its queue",
                    f"chmod go-w {self.state_dir}")
        return None

    def missing_parts(self) -> list[str]:
        """The layout folders that do not exist (empty for a complete workspace)."""
        parts = [self.datasets_dir, self.models_dir, self.metrics_dir, self.experiments_dir]
        return [str(p.relative_to(self.root)) for p in parts if not p.is_dir()]

    def model_dir(self, name: str) -> Path:
        """The folder of model ``name`` in ``Models/``; the name is sanitized first."""
        return self.models_dir / safe_name(name)

    def metrics_file(self, model_name: str) -> Path:
        return self.metrics_dir / f"{safe_name(model_name)}.json"

    def predictions_folder(self, model_name: str) -> Path:
        return self.predictions_dir / safe_name(model_name)

    def experiment_file(self, name: str) -> Path:
        """The preset file for ``name`` in ``experiments/`` (``.toml`` added when missing)."""
        stem = safe_name(name[:-5] if name.endswith(".toml") else name)
        return self.experiments_dir / f"{stem}.toml"

    def job_dir(self, job_id: int | str) -> Path:
        return self.jobs_dir / safe_name(str(job_id))

    def contains(self, path: Path | str) -> bool:
        """True when ``path`` resolves inside the workspace."""
        try:
            Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            return False
        return True


def resolve_workspace(arg: str | os.PathLike | None = None) -> Workspace:
    """The workspace from ``-w``, else ``$LLMTUI_WORKSPACE``, else the current folder."""
    chosen = arg or os.environ.get(WORKSPACE_ENV) or os.getcwd()
    return Workspace(Path(chosen).expanduser().resolve())
