"""Doctor checks of the workspace (CLI process): its layout, the state folder, the model folders, and the queue's
jobs and worker."""

from __future__ import annotations

import os
import stat
import time

from engine.doctor.check import ERROR, OK, SKIPPED, WARNING, Check
from engine.doctor.facts import Facts

#: A job claimed this recently may not have recorded its process yet.
STARTING_GRACE_S = 10.0


def check_workspace(facts: Facts) -> Check:
    ws = facts.ws
    if not ws.root.is_dir():
        return Check("workspace", ERROR, f"{ws.root} does not exist", f"llmtui -w {ws.root} init, or pass -w DIR")
    missing = ws.missing_parts()
    if missing:
        return Check("workspace", WARNING, f"{ws.root} is not a complete workspace: missing {', '.join(missing)}",
                     f"llmtui -w {ws.root} init (creates them; keeps what is there)")
    return Check("workspace", OK, f"{ws.root}: Datasets/, Models/, Testing/, experiments/ present")


def check_state_folder(facts: Facts) -> Check:
    """``.llmtui/`` (queue, job logs) must be writable and private (mode 700): logs may hold paths and errors."""
    name = "state folder"
    state = facts.ws.state_dir
    if not state.exists():
        return Check(name, SKIPPED, f"{state} does not exist yet (created on first use, mode 700)")
    info = state.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not state.is_dir():
        return Check(name, ERROR, f"{state} is not a folder", f"move {state} away")
    if not os.access(state, os.W_OK | os.X_OK):
        return Check(name, ERROR, f"{state} (owner uid {info.st_uid}, mode {mode:o}) is not writable by this user: "
                                  "jobs cannot be queued", f"chown -R $USER {state}")
    if mode & 0o077:
        return Check(name, WARNING, f"{state} has mode {mode:o}: other users can read the queue and job logs",
                     f"chmod 700 {state}")
    return Check(name, OK, f"{state}: mode {mode:o}, writable")


def check_model_folders(facts: Facts) -> Check:
    from engine.models.scan import scan_models

    name = "model folders"
    if not facts.ws.models_dir.is_dir():
        return Check(name, SKIPPED, f"no {facts.ws.models_dir}")
    records = scan_models(facts.ws)
    broken = [r for r in records if r.status == "broken"]
    if broken:
        listed = "; ".join(f"{r.name} ({r.reason})" for r in broken[:5]) + (" …" if len(broken) > 5 else "")
        return Check(name, WARNING, f"{len(broken)} of {len(records)} model folder(s) broken: {listed}",
                     "repair or delete them (llmtui models --status broken lists them)")
    return Check(name, OK, f"{len(records)} model folder(s), none broken")


def check_jobs(facts: Facts) -> list[Check]:
    """Jobs the queue says run whose local process is gone, and whether a worker (or Slurm) serves the queue."""
    from engine.jobs.job_folder import JobStatus
    from engine.jobs.process import process_alive
    from engine.jobs.settings import WorkerError, load_worker_settings
    from engine.jobs.store import JobStore
    from engine.jobs.worker import worker_pid

    ws = facts.ws
    try:
        slurm = load_worker_settings(ws).slurm.enabled
        settings_problem = ""
    except WorkerError as exc:
        slurm, settings_problem = False, str(exc)
    pid = worker_pid(ws) if ws.state_dir.is_dir() else None
    if not ws.queue_db.exists():
        worker = Check("worker", ERROR, settings_problem, "fix .llmtui/worker.toml") if settings_problem else \
            Check("worker", OK, "no queue yet (the worker starts when a job is queued)")
        return [Check("stale jobs", SKIPPED, "no queue yet (.llmtui/queue.db)"), worker]
    with JobStore(ws) as store:
        running = store.list(statuses=[JobStatus.RUNNING])
        queued = store.counts().get(JobStatus.QUEUED, 0)
    now = time.time()
    # A Slurm job has no local process: Slurm tracks it (llmtui queue list shows its state).
    stale = [job for job in running if job.executor != "slurm" and not process_alive(job.pid, job.pid_created)
             and not (job.pid is None and job.started_at and now - job.started_at < STARTING_GRACE_S)]
    if stale:
        listed = ", ".join(f"#{job.id} ({f'pid {job.pid} gone' if job.pid else 'never started'})" for job in stale)
        fix = ("the worker records them within seconds; if they stay, restart it: llmtui worker stop, then "
               "llmtui worker start") if pid else "llmtui worker start (marks them interrupted), then llmtui queue " \
                                                  f"retry {stale[0].id}"
        stale_check = Check("stale jobs", WARNING, f"{len(stale)} job(s) marked running with no process: {listed}", fix)
    else:
        local = [job for job in running if job.executor != "slurm"]
        on_slurm = f" ({len(running) - len(local)} more on Slurm)" if len(local) < len(running) else ""
        stale_check = Check("stale jobs", OK, f"{len(local)} local running job(s), each with a live process{on_slurm}")
    if settings_problem:
        worker = Check("worker", ERROR, settings_problem, "fix .llmtui/worker.toml")
    elif slurm:
        worker = Check("worker", OK, "[slurm] enabled: jobs go to Slurm, no local worker is needed")
    elif pid:
        worker = Check("worker", OK, f"running (pid {pid})" if pid > 0 else "starting")
    elif queued:
        worker = Check("worker", WARNING, f"{queued} queued job(s) and no worker running", "llmtui worker start")
    else:
        worker = Check("worker", OK, "not running; nothing queued (it starts when a job is queued)")
    return [stale_check, worker]
