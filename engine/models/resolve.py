"""Model reference → model folder: where a name, path or hub id given by a user or preset points (any process).

One rule for every caller (the plan, the job process, ``llmtui chat``): a model name in ``Models/``, a path
relative to the workspace or the current folder, an absolute path, else a hub id left for ``from_pretrained``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from engine.workspace import UnsafeNameError, Workspace, safe_name


class ModelNotFoundError(ValueError):
    """A model reference names no folder; the message says every place that was looked in."""


def model_name_from(value: Any) -> str | None:
    """The model's name from a ``model_name`` field: the last component of a POSIX or Windows path
    (``Models\\Qwen3-8B-x`` → ``Qwen3-8B-x``) or of a hub id (``Qwen/Qwen3-0.6B`` → ``Qwen3-0.6B``)."""
    if not isinstance(value, str):
        return None
    parts = [p for p in re.split(r"[\\/]+", value.strip()) if p not in ("", ".", "..")]
    return parts[-1] if parts else None


def model_folder_candidates(ws: Workspace, ref: str | os.PathLike) -> list[Path]:
    """Where a model reference may live, in the order looked in.

    An absolute or ``~`` path is only itself; otherwise a model name in ``Models/``, then a path relative
    to the workspace, then one relative to the current folder.
    """
    text = str(ref)
    path = Path(text).expanduser()
    if path.is_absolute():
        return [path]
    candidates = []
    try:
        if safe_name(text) == text:
            candidates.append(ws.models_dir / text)
    except UnsafeNameError:
        pass
    candidates.append(ws.root / path)
    if (Path.cwd() / path).absolute() != (ws.root / path).absolute():
        candidates.append(Path.cwd() / path)
    return candidates


def resolve_model_folder(ws: Workspace, ref: str | os.PathLike) -> Path:
    """THE "model reference → folder" rule: the resolved folder, or ModelNotFoundError naming where it looked."""
    candidates = model_folder_candidates(ws, ref)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise ModelNotFoundError(f"{str(ref)!r} not found: no such model folder "
                             f"(looked in {', '.join(str(c) for c in candidates)})")


def looks_like_local_path(ref: str) -> bool:
    """True for refs that can only be folders (``./x``, ``/x``, ``~/x``, ``Models/x``), never hub ids."""
    return ref.startswith((".", "/", "~", "Models/", "Models\\")) or "\\" in ref or ref.count("/") > 1


def resolve_model_ref(ws: Workspace, ref: str) -> str:
    """A preset's ``model.base``: the absolute folder it names, else ``ref`` unchanged as a hub id.

    A ref that can only be a folder (absolute, ``~``, ``./``, ``Models/…``) and is missing raises
    ModelNotFoundError naming where it looked; a hub id is left for ``from_pretrained`` (the user's cache
    and token).
    """
    try:
        return str(resolve_model_folder(ws, ref))
    except ModelNotFoundError:
        if looks_like_local_path(ref) or Path(ref).expanduser().is_absolute():
            raise
        return ref
