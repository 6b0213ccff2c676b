"""Job processes: the job entry point, process identity and signals (worker), stdout kept clean (job process)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

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


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus ``extra`` (the package is installed, so no search path is added)."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


def process_alive(pid: int | None, created: float | None) -> bool:
    """True when ``pid`` runs and is the process that started at ``created`` (not a reused pid)."""
    if not pid:
        return False
    import psutil

    try:
        process = psutil.Process(pid)
        if created is not None and abs(process.create_time() - created) > 0.05:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (unix time), stored with a job's pid to recognise it later."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


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
