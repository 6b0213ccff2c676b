"""GPU scheduling. NVML cannot exist on this GPU-less machine, so a FakeInventory (the same small
GpuInventory interface NvmlInventory implements) stands in for the GPUs; the jobs are real processes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from engine.jobs.gpu import GpuReading, NvmlInventory
from engine.jobs.store import JobStore
from engine.jobs.scheduler import Waiting, default_max_parallel, free_gpus, plan_starts
from engine.jobs.settings import WorkerSettings
from engine.jobs.worker import Worker
from engine.workspace import Workspace
from fake_gpus import FakeInventory


def starts(decision):
    return [(s.job_id, s.gpus) for s in decision.starts]


def test_a_2_gpu_job_waits_until_2_gpus_are_free_and_younger_gpu_jobs_wait_behind_it():
    waiting = [Waiting(2, 2), Waiting(3, 1), Waiting(4, 0)]
    decision = plan_starts(waiting, running=1, free=[1], total_gpus=2, max_parallel=2, dependency_status={})
    assert starts(decision) == [(4, ())]  # the CPU job takes the free slot; GPU jobs keep their order
    decision = plan_starts(waiting, running=0, free=[0, 1], total_gpus=2, max_parallel=2, dependency_status={})
    assert starts(decision) == [(2, (0, 1)), (4, ())]


def test_no_gpu_is_given_twice_and_max_parallel_holds():
    waiting = [Waiting(i, 1) for i in range(1, 6)]
    decision = plan_starts(waiting, running=0, free=[0, 1, 2, 3], total_gpus=4, max_parallel=3, dependency_status={})
    assert starts(decision) == [(1, (0,)), (2, (1,)), (3, (2,))]
    cpu = [Waiting(i, 0) for i in range(1, 4)]
    assert len(plan_starts(cpu, running=0, free=[], total_gpus=0, max_parallel=1, dependency_status={}).starts) == 1


def test_dependencies_gate_starts_and_dead_ends_are_reported():
    waiting = [Waiting(5, 0, (1,)), Waiting(6, 0, (2,)), Waiting(7, 0, (3,)), Waiting(8, 0, (99,))]
    decision = plan_starts(waiting, running=0, free=[], total_gpus=0, max_parallel=4,
                           dependency_status={1: "running", 2: "done", 3: "cancelled"})
    assert starts(decision) == [(6, ()), (8, ())]  # #99 was cleared after it finished: satisfied
    assert decision.impossible[7].reason == "not run: dependency #3 cancelled"
    assert decision.impossible[7].dependency == 3


def test_a_job_needing_more_gpus_than_exist_is_impossible():
    decision = plan_starts([Waiting(1, 3)], running=0, free=[0, 1], total_gpus=2, max_parallel=2,
                           dependency_status={})
    assert decision.impossible[1].reason == "needs 3 GPU(s) but only 2 exist"
    decision = plan_starts([Waiting(1, 1)], running=0, free=[], total_gpus=0, max_parallel=1, dependency_status={})
    assert "NVML sees no GPU" in decision.impossible[1].reason


def test_free_gpus_skips_held_gpus_and_gpus_busy_with_other_peoples_work():
    readings = [GpuReading(0, "A", 0, 100, 0.0, 40.0), GpuReading(1, "A", 80, 100, 90.0, 70.0),
                GpuReading(2, "A", 5, 100, 0.0, 40.0)]
    assert free_gpus(readings, assigned=[2], busy_memory_fraction=0.1) == [0]
    assert default_max_parallel(0) == 1 and default_max_parallel(4) == 4


def test_nvml_inventory_reads_real_gpus_or_nothing_without_a_driver():
    readings = NvmlInventory().gpus()
    assert all(isinstance(r, GpuReading) and r.memory_total > 0 for r in readings)
    if not Path("/proc/driver/nvidia").exists():
        assert readings == []


def test_system_reading_reports_this_machine():
    from engine.jobs.gpu import system_reading

    reading = system_reading()
    assert reading.cpu_count >= 1 and 0 < reading.memory_used <= reading.memory_total
    assert 0.0 <= reading.cpu_percent <= 100.0 and len(reading.load_average) == 3


def test_the_worker_with_fake_gpus_never_shares_a_gpu(tmp_path):
    ws = Workspace(tmp_path / "ws").init()
    record = tmp_path / "record"
    record.mkdir()
    job = ("import json, os, sys, time; start = time.time(); time.sleep(0.4); "
           f"open(os.path.join({str(record)!r}, os.environ['LLMTUI_JOB_ID']), 'w').write(json.dumps("
           "{'gpus': os.environ['CUDA_VISIBLE_DEVICES'], 'start': start, 'end': time.time()}))")
    wanted = [1, 2, 1, 1, 2, 1]
    with JobStore(ws) as store:
        ids = [store.enqueue("train", [sys.executable, "-c", job], gpus=g).id for g in wanted]
        impossible = store.enqueue("train", [sys.executable, "-c", "pass"], gpus=3).id
    worker = Worker(ws, WorkerSettings(poll_interval_s=0.05), inventory=FakeInventory.with_gpus(2))
    try:
        worker.recover()
        deadline = time.monotonic() + 60
        while not all(j.finished for j in worker.store.list()):
            assert time.monotonic() < deadline, "the jobs did not finish"
            held = [gpu for run in worker.running.values() for gpu in run.gpus]
            assert len(held) == len(set(held)) and set(held) <= {0, 1}
            assert len(worker.running) <= 2  # max_parallel defaults to one job per GPU
            if not worker.tick():
                time.sleep(0.05)
        jobs = {j.id: j for j in worker.store.list()}
    finally:
        worker.close()
    runs = {job_id: json.loads((record / str(job_id)).read_text()) for job_id in ids}
    for job_id, count in zip(ids, wanted):
        assert jobs[job_id].status == "done"
        assert len(runs[job_id]["gpus"].split(",")) == count
        assert runs[job_id]["gpus"] == ",".join(map(str, jobs[job_id].gpus_assigned))
    for a in ids:
        for b in ids:
            shared = set(runs[a]["gpus"].split(",")) & set(runs[b]["gpus"].split(","))
            if a < b and shared:
                assert runs[a]["end"] <= runs[b]["start"], f"jobs {a} and {b} overlapped on GPU {shared}"
    # The 2-GPU job started only after the 1-GPU job before it had released its GPU.
    assert runs[ids[1]]["start"] >= runs[ids[0]]["end"]
    assert jobs[impossible].status == "failed" and jobs[impossible].error == "needs 3 GPU(s) but only 2 exist"


@pytest.mark.parametrize("text, message", [
    ("max_parallel = 'two'", "max_parallel = 'two' must be an integer"),
    ("cancel_grace_s = -1", "cancel_grace_s = -1 must be at least 0"),
    ("max_paralel = 2", "unknown key 'max_paralel'"),
    ("vllm_python = 3", "vllm_python = 3 must be a string"),
])
def test_bad_worker_settings_name_the_file_and_key(tmp_path, text, message):
    from engine.jobs.settings import WorkerError, load_worker_settings

    ws = Workspace(tmp_path).init()
    (ws.state_dir / "worker.toml").write_text(text)
    with pytest.raises(WorkerError, match="worker.toml") as info:
        load_worker_settings(ws)
    assert message in str(info.value)
