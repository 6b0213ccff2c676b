"""Run a command as a child and measure its peak resident memory and wall time (bench/real_size.py and the
real-size tests; any process that may start children).

The peak is the larger of the summed RSS of its process tree (workers that run side by side) and the largest
high-water mark (``VmHWM``) of a process in it, both polled every 0.1 s. Not ``wait4``'s ``ru_maxrss``: Linux
carries it over exec from the spawning process's memory (``subprocess`` spawns with ``vfork``), so every child
of a 2 GB pytest process "peaked" at 2 GB — the CI run that measured three different stages at 1.96 GB each.
A ``VmHWM`` belongs to the exec'd address space alone; what it can miss is a rise in the last 0.1 s of a process.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Measured:
    wall_s: float
    peak_bytes: int
    rc: int | None
    timed_out: bool


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants now (0 once gone)."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def high_water_mark(pid: int) -> int:
    """Peak resident bytes of ``pid``'s current address space (``VmHWM``; 0 once gone or where unreadable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_measured(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | str | None = None,
                 timeout: float = 3600, log: Path | str | None = None, stdin_pipe: bool = False,
                 alongside: Callable[[subprocess.Popen], None] | None = None) -> Measured:
    """Run ``argv`` to its end (killed after ``timeout`` s); its output goes to ``log`` (appended) or nowhere.

    With ``stdin_pipe`` the child's stdin and stdout are pipes for ``alongside``, which runs in a thread
    with the child (to talk to it, or to signal it) while the memory is polled.
    """
    started = time.perf_counter()
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        child = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE if stdin_pipe else out, stderr=out,
                                 stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL)
    finally:
        if log:
            out.close()
    helper = threading.Thread(target=alongside, args=(child,), daemon=True) if alongside else None
    if helper:
        helper.start()
    peak, rc, timed_out = 0, None, False
    while rc is None:
        peak = max(peak, tree_rss(child.pid), high_water_mark(child.pid))
        pid, status = os.waitpid(child.pid, os.WNOHANG)
        if pid:
            rc = os.waitstatus_to_exitcode(status)
            child.returncode = rc
            break
        if not timed_out and time.perf_counter() - started > timeout:
            timed_out = True
            child.kill()
        time.sleep(0.1)
    if helper:
        helper.join(timeout=5)
    return Measured(round(time.perf_counter() - started, 1), peak, rc, timed_out)
