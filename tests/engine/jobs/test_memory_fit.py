"""Scheduling by memory estimate. NVML cannot exist on this GPU-less machine, so a FakeInventory (the
GpuInventory interface NvmlInventory implements) stands in for the GPUs and their free memory; the
estimates come from real published config.json files, the CPU's available memory is this machine's own."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from engine.jobs.gpu import GpuReading
from engine.jobs.scheduler import Waiting, plan_starts
from engine.jobs.store import JobStore
from engine.jobs.worker import Worker, WorkerSettings
from engine.workspace import Workspace
from fake_gpus import FakeInventory

from conftest import REAL_CONFIGS

GB = 1e9


def test_a_job_that_fits_no_gpu_waits_with_the_reason():
    decision = plan_starts([Waiting(1, 1, memory=18.2 * GB), Waiting(2, 0)], running=0, free=[0, 1], total_gpus=2,
                           max_parallel=2, dependency_status={}, gpu_free_memory={0: 5 * GB, 1: int(11.5 * GB)})
    assert decision.waiting == {1: "needs ~18.2 GB, largest free 11.5 GB on GPU 1"}
    assert [s.job_id for s in decision.starts] == [2]  # the CPU job still takes a slot
    fits = plan_starts([Waiting(1, 1, memory=10 * GB)], running=0, free=[0, 1], total_gpus=2, max_parallel=2,
                       dependency_status={}, gpu_free_memory={0: 5 * GB, 1: int(11.5 * GB)})
    assert [(s.job_id, s.gpus) for s in fits.starts] == [(1, (1,))]  # the GPU it fits on, not the first free


def test_sharing_a_gpu_only_when_opted_in_and_both_fit():
    room = {0: 40 * GB}  # GPU 0 is held by a running job that leaves 40 GB
    two = [Waiting(5, 1, memory=20 * GB), Waiting(6, 1, memory=30 * GB)]
    alone = plan_starts(two, running=1, free=[], total_gpus=1, max_parallel=2, dependency_status={},
                        gpu_free_memory=room)
    assert alone.starts == [] and alone.waiting[5] == "needs ~20.0 GB, no allowed GPU is free"
    shared = plan_starts(two, running=1, free=[], total_gpus=1, max_parallel=3, dependency_status={},
                         gpu_free_memory=room, shareable=[0])
    assert [(s.job_id, s.gpus) for s in shared.starts] == [(5, (0,))]
    assert shared.waiting[6] == "needs ~30.0 GB, no allowed GPU is free"  # 20 GB left after #5; shared once


def test_a_cpu_job_over_the_available_memory_is_refused_or_waits():
    alone = plan_starts([Waiting(1, 0, memory=30 * GB)], running=0, free=[], total_gpus=0, max_parallel=1,
                        dependency_status={}, cpu_available=20 * GB)
    assert alone.impossible[1].reason == "refused: needs ~30.0 GB, the machine has 20.0 GB available"
    busy = plan_starts([Waiting(1, 0, memory=30 * GB)], running=1, free=[], total_gpus=0, max_parallel=2,
                       dependency_status={}, cpu_available=20 * GB)
    assert busy.waiting[1] == "needs ~30.0 GB, the machine has 20.0 GB available" and not busy.impossible


def _workspace_with_8b(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws").init()
    folder = ws.models_dir / "Qwen3-8B"
    folder.mkdir()
    shutil.copy(REAL_CONFIGS / "Qwen3-8B.json", folder / "config.json")  # config only: the estimate needs no weights
    return ws


def _enqueue_train(ws: Workspace, preset: str, *, gpus: int):
    """A train job carrying ``preset`` (its command only exits: the test is about when it may start)."""
    from engine.presets.config import load_preset_text

    with JobStore(ws) as store:
        return store.enqueue("train", [sys.executable, "-c", "pass"], target=load_preset_text(preset).output_name(),
                             preset=preset, gpus=gpus)


@pytest.mark.skipif(not REAL_CONFIGS.is_dir(), reason="../shared/real-configs is not here")
def test_the_worker_holds_a_qwen3_8b_lora_job_on_a_small_gpu(tmp_path):
    ws = _workspace_with_8b(tmp_path)
    job = _enqueue_train(ws, '[model]\nbase = "Models/Qwen3-8B"\n[data]\ndataset = "boolq"\n', gpus=1)
    small = FakeInventory([GpuReading(0, "Fake 20 GB", 1 << 30, 20 << 30, 0.0, 30.0),
                           GpuReading(1, "Fake 16 GB", 0, 16 << 30, 0.0, 30.0)])
    worker = Worker(ws, WorkerSettings(poll_interval_s=0.05), inventory=small)
    try:
        worker.tick()
        waiting = worker.store.get(job.id)
        assert waiting.status == "queued"
        assert waiting.pending_reason.startswith("needs ~")
        assert waiting.pending_reason.endswith("largest free 20.4 GB on GPU 0")  # 20 GiB − 1 GiB in use
    finally:
        worker.close()
    big = FakeInventory.with_gpus(1, memory_total=80 << 30)
    worker = Worker(ws, WorkerSettings(poll_interval_s=0.05), inventory=big)
    try:
        worker.tick()
        assert worker.store.get(job.id).status in ("running", "done")
        assert worker.store.get(job.id).pending_reason == ""
    finally:
        for run in list(worker.running.values()):
            run.process.wait()
        worker.tick()
        worker.close()


@pytest.mark.skipif(not REAL_CONFIGS.is_dir(), reason="../shared/real-configs is not here")
def test_the_worker_refuses_a_cpu_job_larger_than_the_machine(tmp_path):
    ws = _workspace_with_8b(tmp_path)
    # full fine-tuning of 8 B parameters in float32 on the CPU: ~16 bytes a parameter, far above this machine
    job = _enqueue_train(ws, '[model]\nbase = "Models/Qwen3-8B"\n[data]\ndataset = "boolq"\n[peft]\nmethod = "NoPeft"\n',
                         gpus=0)
    worker = Worker(ws, WorkerSettings(poll_interval_s=0.05), inventory=FakeInventory([]))
    try:
        worker.tick()
        refused = worker.store.get(job.id)
        assert refused.status == "failed"
        assert refused.error.startswith("refused: needs ~")
        assert "GB available" in refused.error
    finally:
        worker.close()
