"""Atomic writes (a temp file or folder beside the target, renamed into place), file hashes and the tolerant
JSON reader; any process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def read_json_file(path: Path) -> tuple[Any, str]:
    """(data, "") or (None, reason naming the file); a missing file gives (None, "")."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read()), ""
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:
        return None, f"{Path(path).name}: {exc}"


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (readers see the old file or the new one, never half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: Path | str, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_jsonl(path: Path | str, rows: list[dict]) -> Path:
    """Write one JSON object per line atomically."""
    return write_text(path, "".join(json.dumps(row, default=str) + "\n" for row in rows))


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (hex digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_dir(final: Path | str, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success rename it to ``final``, on error remove it.

    A crashed or killed run therefore never leaves a folder at ``final`` that looks finished.
    The temp folder's name starts with ``.tmp-`` so the model scan skips it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists (use --overwrite to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    promote_dir(tmp, final)


def promote_dir(tmp: Path | str, final: Path | str) -> None:
    """Rename the finished folder ``tmp`` to ``final`` (same parent), replacing an existing ``final``."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        trash = final.with_name(f".tmp-old-{final.name}-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
