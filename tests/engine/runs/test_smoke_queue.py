"""The smoke run's 2-GPU rows, which cannot run for real on this GPU-less machine: a FakeInventory (the queue's
GpuInventory interface) stands in for two GPUs that cannot exist here. The jobs are real: the worker's loop
gives the two evaluation jobs different GPU indexes and the 2-GPU training job both, and ``llmtui train``
relaunches itself as 2 data-parallel ranks (on the CPU, since torch sees no CUDA device). NVML, being fake,
never sees a job: the NVML row must then fail, not pass."""

from __future__ import annotations

import shutil

import pytest

from engine.doctor.check import FAIL, PASS
from engine.runs.smoke import Smoke, _timed, run_queue, step_data_parallel, step_eval_hf, step_nvml, step_scheduler
from fake_gpus import FakeInventory

pytestmark = pytest.mark.slow


def test_two_fake_gpus_two_jobs_on_different_gpus_and_a_2_rank_training_job(demo_ws, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = demo_ws.models_dir / "tiny-qwen3"
    other = demo_ws.models_dir / "tiny-qwen3-copy"  # the second evaluation job needs a model of its own
    shutil.copytree(base, other)
    smoke = Smoke(demo_ws, cuda=False, inventory=FakeInventory.with_gpus(2), gpus=[0, 1],
                  outputs={"full": base, "merged": other})
    queue = run_queue(smoke)
    assert queue.error == "" and sorted(queue.jobs) == [1, 2, 3]
    assert {job.id: job.gpus_assigned for job in queue.jobs.values()} == {1: [0], 2: [1], 3: [0, 1]}

    rows = {name: _timed(name, lambda step=step: step(smoke, queue)) for name, step in (
        ("eval", step_eval_hf), ("scheduler", step_scheduler), ("dp", step_data_parallel), ("nvml", step_nvml))}
    assert rows["eval"].status == PASS and "16 BoolQ items as queue job #1" in rows["eval"].detail
    assert rows["scheduler"].status == PASS, rows["scheduler"]
    assert "jobs #1 → GPU [0], #2 → GPU [1]" in rows["scheduler"].detail
    assert rows["dp"].status == PASS and "world size 2 (accelerate launch), 2 CPU ranks" in rows["dp"].detail
    assert rows["nvml"].status == FAIL and "NVML did not see job #1 on its GPU" in rows["nvml"].detail
