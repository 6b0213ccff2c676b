"""Job processes: the job entry point, process identity and signals (worker), stdout kept clean (job and CLI processes)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO, Iterator

from engine.workspace import Workspace

#: The one module every job process runs: the ``llmtui`` command (``llmtui train|quantize|eval …``).
JOB_ENTRY_MODULE = "tui.cli"
#: The wrapper that runs a job's command and records its exit status (see :mod:`engine.jobs.jobrun`).
JOB_WRAPPER_MODULE = "engine.jobs.jobrun"


def python_command(module: str, *args: str) -> list[str]:
    """Run ``module`` of the installed package with this interpreter; ``-P`` keeps the cwd off ``sys.path``."""
    return [sys.executable, "-P", "-m", module, *args]


def llmtui_command(ws: Workspace, *args: str) -> list[str]:
    """The argv that runs ``llmtui -w WS ARGS…`` with this interpreter: every job and the worker start so."""
    return python_command(JOB_ENTRY_MODULE, "-w", str(ws.root), *args)


#: Set only by the test suite (tests/conftest.py), in the environment of the worker it starts, never read from
#: queue.db: lets the queue's own tests run trivial ``python -c`` jobs.
ANY_COMMAND_ENV = "LLMTUI_TEST_ANY_JOB_COMMAND"


def is_job_command(argv: list[str]) -> bool:
    """THE rule for what runs from the queue: llmtui's own job entry with this interpreter, nothing else."""
    if os.environ.get(ANY_COMMAND_ENV) == "1":
        return True
    prefix = python_command(JOB_ENTRY_MODULE)
    return list(argv[:len(prefix)]) == prefix


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus ``extra`` (the package is installed, so no search path is added)."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


def process_alive(pid: int | None, created: float | None) -> bool:
    """True when ``pid`` runs and is the process that started at ``created`` (its start ticks, see
    :mod:`engine.jobs.proc_identity`; a wall-clock time recorded by an older llmtui is still recognised)."""
    if not pid:
        return False
    from engine.jobs.proc_identity import same_process

    if same_process(pid, created):
        return True
    # An older llmtui stored the wall-clock start (about 1.7e9); start ticks stay far below that.
    return created is not None and created > 1e9 and _legacy_same_start(pid, created)


def _legacy_same_start(pid: int, created: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - created) <= 0.05
    except psutil.Error:
        return False


def process_start_time(pid: int) -> float | None:
    """The identity stored with a job's pid to recognise it later: its start ticks (never the wall clock)."""
    from engine.jobs.proc_identity import start_ticks

    ticks = start_ticks(pid)
    return None if ticks is None else float(ticks)


def descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):  # the group is gone (or was never ours)
        pass


def kill_all(processes: list) -> None:
    import psutil

    for process in processes:
        try:
            if process.is_running():  # psutil compares start times: a reused pid is left alone
                process.kill()
        except psutil.Error:
            pass


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
