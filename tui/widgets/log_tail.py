"""Follow a growing log file like toolong: a thread reads only new bytes, a ``Log`` keeps the last lines (TUI).

Opening a file reads at most its last ``initial_bytes`` (a 1 GB log is never loaded whole); after
that each poll reads what was appended. A file that shrinks (rotated, rewritten) is read again from
its start. Carriage-return progress lines show their last state, as a terminal would.
"""

from __future__ import annotations

import os
from pathlib import Path

from textual import work
from textual.widgets import Log
from textual.worker import get_current_worker

#: Lines the widget keeps (older ones scroll away).
MAX_LINES = 5000
#: How much of an existing file is shown when it is opened.
INITIAL_BYTES = 256 << 10
#: The most read per poll, so one huge burst cannot stall the screen.
CHUNK_BYTES = 1 << 20


def split_lines(data: bytes) -> tuple[list[str], bytes]:
    """Complete lines (decoded, ``\\r`` overwrites applied) and the unfinished remainder."""
    parts = data.split(b"\n")
    rest = parts.pop()
    lines = [part.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", errors="replace") for part in parts]
    return lines, rest


class LogTail(Log):
    """A ``Log`` that follows one file at a time (:meth:`follow`); ``auto_scroll`` is the follow mode."""

    def __init__(self, *, max_lines: int = MAX_LINES, initial_bytes: int = INITIAL_BYTES, poll_s: float = 0.25,
                 id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, id=id)
        self.initial_bytes = initial_bytes
        self.poll_s = poll_s
        self.path: Path | None = None

    def on_resize(self) -> None:
        if self.auto_scroll:  # keep following when the panel around the log changes size
            self.scroll_end(animate=False, immediate=True)

    def follow(self, path: Path | None) -> None:
        """Show the end of ``path`` and keep appending what is written to it (None: stop, show nothing)."""
        if path == self.path:
            return
        self.path = path
        self.clear()
        if path is None:
            self.workers.cancel_group(self, "log-tail")
        else:
            self._tail(path)

    @work(thread=True, exclusive=True, group="log-tail", exit_on_error=False)
    def _tail(self, path: Path) -> None:
        worker = get_current_worker()
        offset: int | None = None
        rest = b""
        skip_partial = False
        while not worker.is_cancelled:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = None
            if size is not None and offset is None:
                offset = max(size - self.initial_bytes, 0)
                skip_partial = offset > 0
            if size is not None and offset is not None and size < offset:
                offset, rest, skip_partial = 0, b"", False
                if not self._deliver(worker, path, None):
                    return
            if size is None or offset is None or size == offset:
                worker.cancelled_event.wait(self.poll_s)
                continue
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(min(size - offset, CHUNK_BYTES))
            except OSError:
                worker.cancelled_event.wait(self.poll_s)
                continue
            offset += len(chunk)
            lines, rest = split_lines(rest + chunk)
            if skip_partial and lines:
                lines, skip_partial = lines[1:], False
            if lines and not self._deliver(worker, path, lines):
                return

    def _deliver(self, worker, path: Path, lines: list[str] | None) -> bool:
        """Hand lines to the widget on the UI thread (None: the file restarted, clear first)."""
        if worker.is_cancelled:
            return False
        try:
            self.app.call_from_thread(self._show, path, lines)
        except RuntimeError:  # the app is closing
            return False
        return True

    def _show(self, path: Path, lines: list[str] | None) -> None:
        if path != self.path:
            return
        if lines is None:
            self.clear()
        else:
            self.write_lines(lines)
