"""Keep a command's own output apart from the banners and progress bars libraries print (CLI and job processes)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO, Iterator


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (Python and C code alike) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def output_to_file(path: str | os.PathLike) -> Iterator[tuple[IO[str], IO[str]]]:
    """Send everything written to file descriptors 1 and 2 (Python and C code alike) to ``path`` meanwhile, and
    yield text streams on the real stdout and stderr for the command's own lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out, err = os.fdopen(os.dup(saved[0]), "w", buffering=1), os.fdopen(os.dup(saved[1]), "w", buffering=1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        yield out, err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)
        out.close()
        err.close()
