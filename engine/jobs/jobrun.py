"""The per-job wrapper process the worker starts: run one job's command and record how it ended.

Usage: ``python -m engine.jobs.jobrun EXIT_FILE -- ARGV...``.

The worker starts this as the leader of the job's own process group. It runs ARGV (which inherits
the log file as stdout/stderr), waits for it, and writes its exit code (negative: killed by that
signal) to EXIT_FILE atomically. So a job that outlives its worker still reports its real result to
the next worker. A cancel signals the whole group; the command gets the signal itself, and this
wrapper keeps waiting so it can record the outcome.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process instead of init (Linux 3.4+)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _outside_group() -> list:
    """Descendants that left this process group (``setsid``): the group's signals do not reach them."""
    from engine.jobs.process import descendants

    group = os.getpgrp()
    found = []
    for process in descendants(os.getpid()):
        try:
            if os.getpgid(process.pid) != group:
                found.append(process)
        except OSError:
            pass
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m engine.jobs.jobrun EXIT_FILE -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    from engine.fault_points import pause_point
    from engine.jobs.job_folder import record_launcher
    from engine.jobs.proc_identity import start_ticks
    from engine.jobs.requeue import STOP_SIGNAL

    def to_detached(signum, _frame) -> None:  # the group got it; those that left the group get it from here
        for target in _outside_group():
            try:
                target.send_signal(signum)
            except Exception:  # gone meanwhile
                pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # A Python-level handler (not SIG_IGN) so the command starts with the default disposition.
        signal.signal(signum, to_detached)
    become_subreaper()
    pause_point("launcher-before-record")
    if not record_launcher(Path(exit_file).parent, os.getpid(), start_ticks(os.getpid())):
        print("llmtui: a worker's recovery gave this job up before it started; not starting it", file=sys.stderr,
              flush=True)
        return 125
    process = None

    def pass_on(signum, _frame) -> None:
        if process is None:
            return
        from engine.jobs.process import descendants

        for target in descendants(os.getpid()):  # the command and all it started, re-parented orphans too
            try:
                target.send_signal(signum)
            except Exception:  # gone meanwhile
                pass

    signal.signal(STOP_SIGNAL, pass_on)
    try:
        process = subprocess.Popen(command)
    except OSError as exc:
        print(f"llmtui: cannot start {command[0]!r}: {exc}", file=sys.stderr, flush=True)
        code = 127
    else:
        code = process.wait()
        from engine.jobs.process import descendants, kill_all

        kill_all(descendants(os.getpid()))  # what the command left behind (re-parented here) ends with it
    from engine.files import write_text

    write_text(exit_file, f"{code}\n")
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
