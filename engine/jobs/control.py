"""The control front door (CLI / TUI process): hand the queue to what runs it, and cancel a job, locally or on Slurm.

``llmtui queue`` and the TUI call these two; they pick the local worker
(:mod:`engine.jobs.worker`) or the Slurm executor (:mod:`engine.jobs.slurm`) from ``.llmtui/worker.toml``.
"""

from __future__ import annotations

import signal
import time

from engine.jobs.job_folder import JobStatus, job_log_tail, read_exit_code
from engine.jobs.process import descendants, kill_all, process_alive, signal_group
from engine.jobs.settings import WorkerError, load_worker_settings
from engine.jobs.slurm import SlurmError, cancel, sync
from engine.jobs.store import Job, JobStore
from engine.jobs.worker import ensure_worker, worker_pid
from engine.workspace import Workspace


def run_queued(ws: Workspace) -> str:
    """Hand the queued jobs to what runs them: Slurm when ``[slurm] enabled`` (they are submitted now),
    else the local worker (started unless one runs). Returns one line saying which."""
    if load_worker_settings(ws).slurm.enabled:
        try:
            sync(ws)
        except SlurmError as exc:
            raise WorkerError(str(exc)) from None
        return "submitted to Slurm"
    return f"worker pid {ensure_worker(ws)}"


def cancel_job(ws: Workspace, job_id: int, *, wait_s: float | None = None) -> str:
    """Cancel a job and return its status afterwards.

    A queued job is cancelled at once. A running one gets SIGTERM to its process group, then SIGKILL
    after the grace period: from the worker, or from this process when no worker runs.
    """
    settings = load_worker_settings(ws)
    with JobStore(ws) as store:
        job = store.require(job_id)
    if job.executor == "slurm" or (settings.slurm.enabled and job.status == JobStatus.QUEUED):
        try:
            return cancel(ws, job_id) if wait_s is None else cancel(ws, job_id, wait_s=wait_s)
        except SlurmError as exc:
            raise WorkerError(str(exc)) from None
    wait_s = settings.cancel_grace_s + 5.0 if wait_s is None else wait_s
    with JobStore(ws) as store:
        if store.request_cancel(job_id) == JobStatus.CANCELLED:
            return JobStatus.CANCELLED
        if not worker_pid(ws):
            _terminate_orphan(ws, store, store.require(job_id), settings.cancel_grace_s)
        deadline = time.monotonic() + wait_s
        while (job := store.require(job_id)).status == JobStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        return job.status


def _terminate_orphan(ws: Workspace, store: JobStore, job: Job, grace_s: float) -> None:
    """End a running job no worker watches: SIGTERM its group, SIGKILL after ``grace_s``, record it."""
    if job.pid and process_alive(job.pid, job.pid_created):
        tree = descendants(job.pid)
        signal_group(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process_alive(job.pid, job.pid_created) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_alive(job.pid, job.pid_created):
            tree += descendants(job.pid)
            signal_group(job.pid, signal.SIGKILL)
        kill_all(tree)
        deadline = time.monotonic() + 2.0
        while process_alive(job.pid, job.pid_created) and time.monotonic() < deadline:
            time.sleep(0.02)
    job_dir = ws.job_dir(job.id)
    store.finish(job.id, read_exit_code(job_dir), log_tail=job_log_tail(job_dir))

