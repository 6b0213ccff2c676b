"""A training job survives a "reboot": the worker and the job are killed with SIGKILL after the job's first
checkpoint; the next worker marks it interrupted, queues it again, and the copy resumes from the checkpoint."""

from __future__ import annotations

import os
import signal

import pytest

from engine.events import read_events
from engine.jobs.enqueue import enqueue_pipeline
from engine.jobs.progress import JobProgress
from engine.jobs.store import JobStore
from engine.jobs.process import process_alive
from engine.jobs.settings import WorkerError, load_worker_settings
from engine.jobs.worker import ensure_worker, stop_worker, worker_pid
from engine.presets.config import load_preset
from engine.staging import latest_checkpoint
from waiting import wait_for

FAST = ["train.logging_steps=1", "train.per_device_train_batch_size=4", "data.trunc_train=64",
        "train.max_steps=60", "train.save_steps=10", "eval.after=false"]


def test_worker_settings_for_auto_resume(tmp_path):
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").init()
    path = ws.state_dir / "worker.toml"
    assert load_worker_settings(ws).auto_resume is True
    path.write_text("auto_resume = false\nauto_resume_attempts = 1\n")
    settings = load_worker_settings(ws)
    assert settings.auto_resume is False and settings.auto_resume_attempts == 1
    path.write_text("auto_resume = 1\n")
    with pytest.raises(WorkerError, match="auto_resume = 1 must be true or false"):
        load_worker_settings(ws)


@pytest.mark.slow
def test_an_interrupted_training_is_requeued_and_resumes(demo_ws, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ws = demo_ws
    preset = ws.experiments_dir / "boolq-full.toml"
    config = load_preset(preset, FAST)
    try:
        with JobStore(ws) as store:
            [job] = enqueue_pipeline(ws, config, preset.read_text(), overrides=FAST)
            worker = ensure_worker(ws)
            staging = wait_for(lambda: next(iter(ws.models_dir.glob(".tmp-*-run-*")), None), 120, "the staging folder",
                               0.005)
            checkpoint = wait_for(lambda: latest_checkpoint(staging), 120, "the first checkpoint", 0.005)
            running = store.get(job.id)
            # the machine "reboots": the worker and the job die at once, nobody records anything
            os.kill(worker, signal.SIGKILL)
            os.killpg(running.pid, signal.SIGKILL)
            wait_for(lambda: worker_pid(ws) is None and not process_alive(running.pid, running.pid_created), 10,
                     "worker and job to die")
            assert store.get(job.id).status == "running", "no worker saw the job end"

            ensure_worker(ws)
            jobs = wait_for(lambda: (js := store.list()) and len(js) == 2 and js[1].finished and js, 300,
                            "the re-queued copy to finish")
    finally:
        stop_worker(ws)
    original, copy = jobs
    assert original.status == "interrupted" and copy.status == "done", copy.error
    assert copy.retry_of == original.id
    log = (ws.state_dir / "worker.log").read_text()
    assert f"re-queued as job {copy.id} to resume from its checkpoint at step" in log
    events = read_events(ws.root / copy.events_path)
    start = events[0]
    assert start["kind"] == "start" and start["resumed_from_step"] >= checkpoint.step
    steps = [e["step"] for e in events if e["kind"] == "train_step"]
    assert steps == list(range(start["resumed_from_step"] + 1, 61))
    progress = JobProgress()
    progress.update(events)
    assert progress.resumed_from_step == start["resumed_from_step"] and progress.done == 60
    assert (ws.model_dir(start["model"]) / "model.safetensors").is_file() and not staging.exists()


def test_auto_resume_stops_after_the_allowed_attempts(tmp_path):
    """A training that keeps dying is re-queued at most ``auto_resume_attempts`` times in a chain; one without a
    checkpoint, or with auto_resume off, stays interrupted."""
    import json
    import subprocess
    import sys

    from engine.jobs.process import process_start_time
    from engine.jobs.settings import WorkerSettings
    from engine.jobs.worker import Worker
    from engine.staging import mark_complete, staging_dir
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").init()
    staging = staging_dir(ws.models_dir, "m", "0123456789ab")
    (staging / "checkpoint-5").mkdir(parents=True)
    mark_complete(staging / "checkpoint-5")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    created = process_start_time(gone.pid)
    gone.wait()  # a process that existed and is gone: as after a reboot

    def die(store: JobStore, job_id: int, with_start: bool = True) -> None:
        assert store.claim(job_id, [])
        store.set_process(job_id, gone.pid, created)
        events = ws.root / store.get(job_id).events_path
        events.parent.mkdir(parents=True, exist_ok=True)
        if with_start:
            events.write_text(json.dumps({"t": 1.0, "kind": "start", "staging": str(staging)}) + "\n")

    said: list[str] = []
    settings = WorkerSettings(auto_resume_attempts=1)
    with JobStore(ws) as store:
        first = store.enqueue("train", ["true"])
        die(store, first.id)
        worker = Worker(ws, settings, say=said.append)
        worker.recover()
        jobs = store.list()
        assert [(j.status, j.retry_of) for j in jobs] == [("interrupted", None), ("queued", first.id)]
        die(store, jobs[1].id)
        worker.recover()
        assert [j.status for j in store.list()] == ["interrupted", "interrupted"], "one attempt allowed"
        assert "not resumed automatically: 1 retries already led to it" in said[-1]

        fresh = store.enqueue("train", ["true"])
        die(store, fresh.id, with_start=False)  # died before it had a staging folder
        worker.recover()
        assert store.get(fresh.id).status == "interrupted" and len(store.list()) == 3

        off = store.enqueue("train", ["true"])
        die(store, off.id)
        Worker(ws, WorkerSettings(auto_resume=False)).recover()
        assert store.get(off.id).status == "interrupted" and len(store.list()) == 4
        worker.close()
