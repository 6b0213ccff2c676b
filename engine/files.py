"""Atomic writes (a temp file or folder beside the target, renamed into place), file hashes and the tolerant
JSON reader; any process."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from engine.fault_points import pause_point


def read_json_file(path: Path) -> tuple[Any, str]:
    """(data, "") or (None, reason naming the file); a missing file gives (None, "")."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read()), ""
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:
        return None, f"{Path(path).name}: {exc}"


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``; a set-and-restore elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(base: int) -> int:
    """``base`` (0o666 for files, 0o777 for folders) less the umask: what ``open``/``mkdir`` would give.

    ``mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask; outputs colleagues share must not.
    """
    return base & ~current_umask()


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (readers see the old file or the new one, never half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode(0o666))
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


@contextlib.contextmanager
def held_lock(path: Path | str, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); yields False when another process holds it
    and ``wait`` is False, or when its folder was removed meanwhile."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


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
    os.chmod(tmp, umask_mode(0o777))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    promote_dir(tmp, final)


def promote_dir(tmp: Path | str, final: Path | str) -> None:
    """Rename the finished folder ``tmp`` to ``final`` (same parent), replacing an existing ``final``.

    An existing ``final`` is swapped with ``tmp`` in one step (``renameat2(RENAME_EXCHANGE)``), so a kill at
    any moment leaves ``final`` whole, old or new; the old one is then removed from ``tmp``'s name. Two
    renames (old away, new in) left no ``final`` at all when killed between them.
    """
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        os.replace(tmp, final)
        return
    if _exchange(tmp, final):
        pause_point("promote-after-exchange")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    trash = final.with_name(f".tmp-old-{final.name}-{os.getpid()}")  # a file system without the exchange
    os.replace(final, trash)
    os.replace(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system or file system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(b))
