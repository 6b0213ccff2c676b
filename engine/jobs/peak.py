"""Run a command as a child and measure its peak resident memory and wall time (bench/real_size.py and the
real-size tests; any process that may start children).

The peak is the larger of the summed RSS of its process tree (workers that run side by side) and the largest
high-water mark (``VmHWM``) of a process in it, both polled every 0.1 s. Not ``wait4``'s ``ru_maxrss``: Linux
carries it over exec from the spawning process's memory (``subprocess`` spawns with ``vfork``), so every child
of a 2 GB pytest process "peaked" at 2 GB — the CI run that measured three different stages at 1.96 GB each.
A ``VmHWM`` belongs to the exec'd address space alone; what it can miss is a rise in the last 0.1 s of a process.

Both leave out descendants forked and not yet exec'd: their pages are their parent's (a ``vfork`` child runs
in the very same memory; a ``fork`` child's pages are shared until written), so adding their RSS counted the
parent twice whenever a poll fell between a ``subprocess`` call's fork and its exec (ctypes' ``find_library``
runs ``ldconfig``, ``gcc`` and ``ld`` while a merge saves: a 1 GB process calling it measured 2.03 GB, the
2-layer real-vocabulary merge 1.5 GB in some runs and 1.9 GB in others). Workers forked without exec
(``multiprocessing``'s fork start method) are thus counted through their parent only; llmtui's own workers
are exec'd processes.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: The kernel's "forked but did not exec" process flag (include/linux/sched.h), field 9 of /proc/PID/stat.
PF_FORKNOEXEC = 0x40


@dataclass
class Measured:
    wall_s: float
    peak_bytes: int
    rc: int | None
    timed_out: bool


def forked_not_execed(pid: int) -> bool:
    """True while ``pid`` is a fork of its parent that has not exec'd (False once gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return bool(int(stat.rpartition(")")[2].split()[6]) & PF_FORKNOEXEC)  # fields after "(comm)" start at 3


def _tree(pid: int) -> list:
    """``pid`` and its descendants that have their own address space (exec'd), as psutil processes."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root] + [c for c in root.children(recursive=True) if not forked_not_execed(c.pid)]
    except psutil.Error:
        return []


def summed_rss(processes: list) -> int:
    """Resident bytes of ``processes`` (psutil processes) now; one that is gone counts 0."""
    import psutil

    total = 0
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
        tree = _tree(child.pid)  # walked once a poll: both measures read the same processes
        peak = max(peak, summed_rss(tree), *(high_water_mark(process.pid) for process in tree))
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
