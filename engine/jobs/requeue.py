"""Stop and requeue before a time limit (job process, batch script): the signal, the exit code, the flag.

A job asked to stop gets :data:`STOP_SIGNAL` (Slurm sends it ``signal_before_s`` before the time limit or a
preemption; :mod:`engine.jobs.jobrun` passes it on). A training that handles it saves a checkpoint at the
end of the current step, writes a ``stopped`` event and exits with :data:`REQUEUE_EXIT_CODE`; the batch
script then runs ``scontrol requeue`` and the job starts again (resuming from that checkpoint where
checkpoints exist). Every other ``llmtui`` command ignores the signal and runs on until the limit.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNAL = signal.SIGUSR1
#: "Stopped on request, state saved, run me again" (EX_TEMPFAIL).
REQUEUE_EXIT_CODE = 75

_stop = threading.Event()


def install_stop_handler() -> None:
    """From now on :data:`STOP_SIGNAL` only raises the flag :func:`stop_requested` reads (main thread only)."""
    signal.signal(STOP_SIGNAL, lambda *_: _stop.set())


def ignore_stop_signal() -> None:
    """Commands that cannot checkpoint (evaluation, quantization) ignore the signal and run on to the limit."""
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)


def request_stop() -> None:
    """Raise the flag from this process (a training's SIGTERM handler: a cancel saves a checkpoint first)."""
    _stop.set()


def stop_requested() -> bool:
    """True once this process got :data:`STOP_SIGNAL`."""
    return _stop.is_set()
