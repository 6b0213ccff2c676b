"""Whether a training job can resume: its run's staging folder (named by its ``start`` event) and that
folder's newest complete checkpoint; worker and CLI."""

from __future__ import annotations

from pathlib import Path

from engine.events import EventKind, read_events
from engine.jobs.store import Job
from engine.staging import Checkpoint, latest_checkpoint
from engine.workspace import Workspace


def job_checkpoint(ws: Workspace, job: Job) -> Checkpoint | None:
    """The checkpoint a retry of training ``job`` would resume from (None: it would start over)."""
    if job.kind != "train" or not job.events_path:
        return None
    starts = [e for e in read_events(ws.root / job.events_path) if e.get("kind") == EventKind.START and e.get("staging")]
    if not starts:
        return None
    staging = Path(str(starts[-1]["staging"]))
    return latest_checkpoint(staging) if ws.contains(staging) else None


def retry_depth(jobs_by_id: dict[int, Job], job: Job) -> int:
    """How many retries lead to ``job`` (0 for a job queued by hand)."""
    depth, seen = 0, {job.id}
    while job.retry_of is not None and job.retry_of in jobs_by_id and job.retry_of not in seen:
        job = jobs_by_id[job.retry_of]
        seen.add(job.id)
        depth += 1
    return depth
