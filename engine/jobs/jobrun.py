"""The per-job wrapper process the worker starts: run one job's command and record how it ended.

Usage: ``python -m engine.jobs.jobrun EXIT_FILE -- ARGV...``.

The worker starts this as the leader of the job's own process group. It runs ARGV (which inherits
the log file as stdout/stderr), waits for it, and writes its exit code (negative: killed by that
signal) to EXIT_FILE atomically. So a job that outlives its worker still reports its real result to
the next worker. A cancel signals the whole group; the command gets the signal itself, and this
wrapper keeps waiting so it can record the outcome.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m engine.jobs.jobrun EXIT_FILE -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # A Python-level handler (not SIG_IGN) so the command starts with the default disposition.
        signal.signal(signum, lambda *_: None)
    from engine.jobs.requeue import STOP_SIGNAL

    process = None

    def pass_on(signum, _frame) -> None:
        if process is None:
            return
        from engine.jobs.process import descendants

        for target in [process, *descendants(process.pid)]:
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
    from engine.files import write_text

    write_text(exit_file, f"{code}\n")
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
