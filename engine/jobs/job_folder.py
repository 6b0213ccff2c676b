"""A job's folder ``.llmtui/jobs/{id}/`` — every file name in it and how it is read — and the job statuses (any process).

The worker and the Slurm executor write the same files: ``preset.toml`` (the frozen preset a training
reads), ``log.txt`` (the job's stdout and stderr, with the executor's own lines marked :data:`LOG_HEADER`),
``events.jsonl`` (the job process's events), ``exit_code`` (written by :mod:`engine.jobs.jobrun` when the
command ends) and, on Slurm, ``slurm.sh`` (the batch script). Nothing else names them.
"""

from __future__ import annotations

import json
import os
import signal
from enum import StrEnum
from pathlib import Path

from engine.events import EventKind
from engine.files import write_text

PRESET_FILE = "preset.toml"
LOG_FILE = "log.txt"
EVENTS_FILE = "events.jsonl"
EXIT_FILE = "exit_code"
SLURM_SCRIPT_FILE = "slurm.sh"
#: ``{job_dir}`` in a stored command stands for the job's folder (known only once the job has an id).
JOB_DIR_PLACEHOLDER = "{job_dir}"
LOG_TAIL_LINES = 20
LOG_HEADER = "# llmtui: "  # lines the worker writes into a job's log (left out of its tail)


class JobStatus(StrEnum):
    """Where a job is: ``queued`` → ``running`` → one of the finished statuses (a ``str``, stored as text)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Its process vanished while no worker watched it; on Slurm: node failure, preemption or time limit.
    INTERRUPTED = "interrupted"


FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, *FINISHED)
#: Finished without success: a retry may queue them again, and their dependents can never run.
RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)
#: What the Jobs table shows for a running job whose cancel was asked (not a stored status).
CANCELLING = "cancelling"


def relative_job_files(job_dir: Path) -> tuple[str, str]:
    """The ``log_path`` and ``events_path`` the queue records for a job folder (relative to the workspace)."""
    return str(job_dir / LOG_FILE), str(job_dir / EVENTS_FILE)


def prepare_job_dir(job_dir: Path, preset: str | None) -> None:
    """Create the job's folder and freeze its preset in it (when it has one); clear a previous exit code."""
    job_dir.mkdir(parents=True, exist_ok=True)
    if preset is not None:
        write_text(job_dir / PRESET_FILE, preset)
    (job_dir / EXIT_FILE).unlink(missing_ok=True)


def read_exit_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_exit_code(job_dir: Path) -> int | None:
    """The exit code :mod:`engine.jobs.jobrun` recorded in the job's folder, None when there is none."""
    return read_exit_file(job_dir / EXIT_FILE)


def _tail_text(path: Path, max_bytes: int = 64 << 10) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - max_bytes, 0))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` non-blank lines a job wrote to its log (empty when there are none)."""
    text = _tail_text(path).replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith(LOG_HEADER)]
    return "\n".join(kept[-lines:])


def job_log_tail(job_dir: Path) -> str:
    """:func:`log_tail` of the job's ``log.txt``."""
    return log_tail(job_dir / LOG_FILE)


def last_error_event(events_path: Path) -> str:
    """The message of the last ``error`` event near the end of an events file ('' when none)."""
    for line in reversed(_tail_text(events_path).splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("kind") == EventKind.ERROR and event.get("message"):
            return str(event["message"])
    return ""


def error_summary(exit_code: int | None, tail: str, events_path: Path) -> str:
    """One line: how the job ended and its last error message (an ``error`` event, else the last log line)."""
    if exit_code is None:
        how = "ended without an exit status"
    elif exit_code < 0:
        try:
            how = f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            how = f"killed by signal {-exit_code}"
    else:
        how = f"exit code {exit_code}"
    detail = last_error_event(events_path) or (tail.splitlines()[-1] if tail else "")
    return f"{how}: {detail}"[:400].replace("\n", " ") if detail else how


def job_error(job_dir: Path, exit_code: int | None, tail: str) -> str:
    """:func:`error_summary` of a job from its folder ('' for a job that exited 0)."""
    return "" if exit_code == 0 else error_summary(exit_code, tail, job_dir / EVENTS_FILE)
