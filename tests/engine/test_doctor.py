"""``llmtui doctor``'s report: every check on this machine, a broken model folder and a stale job, and the
GPU branches. This machine has no GPU and no NVIDIA driver, so the GPU branches run against a FakeInventory
(the queue's GpuInventory interface, standing in for GPUs that cannot exist here) and a stand-in for the
CUDA probe's answer (torch's view of those same GPUs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.doctor.check import ERROR, OK, SKIPPED, WARNING, exit_code
from engine.doctor.facts import torch_build_info
from engine.doctor.report import CHECKS, run_report
from engine.jobs.gpu import DriverInfo, GpuProcess, GpuReading, NvmlInventory, SelectedGpus
from engine.jobs.store import JobStore
from engine.workspace import Workspace
from fake_gpus import FakeInventory

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30
#: Every check name the report gives on a machine without an NVIDIA driver.
NAMES_WITHOUT_GPU = ["python", "llmtui", "torch", "transformers", "peft", "trl", "accelerate", "datasets",
                     "bitsandbytes", "gptqmodel", "hqq", "textual", "other requirements", "vllm", "vllm python",
                     "nvidia driver", "cuda runtime", "gpus", "torch cuda", "bf16", "bitsandbytes native",
                     "gptqmodel kernels", "flash attention", "disk models", "disk hf cache", "hf cache", "workspace",
                     "state folder", "model folders", "stale jobs", "worker"]
NO_GPU_HERE = not NvmlInventory().gpus()


def by_name(checks):
    return {check.name: check for check in checks}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws").init()


@pytest.fixture(autouse=True)
def no_vllm_python(monkeypatch):
    monkeypatch.delenv("LLMTUI_VLLM_PYTHON", raising=False)


@pytest.mark.skipif(not NO_GPU_HERE, reason="asserts this machine's GPU-less answers")
def test_report_on_this_machine_has_every_check_with_a_sensible_status(ws):
    checks = run_report(ws)
    assert [c.name for c in checks] == NAMES_WITHOUT_GPU
    found = by_name(checks)
    for name in ("python", "llmtui", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes",
                 "gptqmodel", "hqq", "textual", "other requirements", "workspace", "state folder", "model folders",
                 "worker", "bitsandbytes native", "hf cache"):
        assert found[name].status == OK, found[name]
    assert found["python"].detail.startswith(f"Python {sys.version.split()[0]}")
    build = torch_build_info()
    assert found["torch"].detail.startswith(build["version"].split("+")[0])
    assert ("CUDA " + build["cuda"] if build["cuda"] else "CPU-only") in found["torch"].detail
    # No driver: one warning that says why and how to fix it; the GPU rows say they do not apply.
    assert found["nvidia driver"].status == WARNING and "NVML" in found["nvidia driver"].detail
    assert found["nvidia driver"].fix
    for name in ("cuda runtime", "gpus", "torch cuda", "bf16", "gptqmodel kernels", "flash attention", "vllm python",
                 "stale jobs"):
        assert found[name].status == SKIPPED, found[name]
    assert "no CUDA device" in found["bf16"].detail
    assert found["state folder"].detail.endswith("mode 700, writable")
    assert found["disk models"].status in (OK, WARNING) and str(ws.models_dir) in found["disk models"].detail
    assert all(c.status in (OK, WARNING, ERROR, SKIPPED) and c.detail and c.seconds >= 0 for c in checks)
    assert all(c.fix for c in checks if c.status in (WARNING, ERROR))
    assert exit_code(checks) == 0


def test_report_is_fast_and_imports_no_ml_library(ws):
    """A fresh interpreter makes the whole report in well under 5 s without importing torch or its kin."""
    code = ("import sys, time; from pathlib import Path; started = time.perf_counter()\n"
            "from engine.doctor.report import run_report; from engine.workspace import Workspace\n"
            f"checks = run_report(Workspace(Path({str(ws.root)!r})))\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'peft', 'trl', 'bitsandbytes', 'gptqmodel', 'hqq', 'accelerate'))\n"
            "print(len(checks), round(time.perf_counter() - started, 2), heavy)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    count, seconds, heavy = out.split(" ", 2)
    assert int(count) >= len(CHECKS) and heavy.strip() == "[]"
    if NO_GPU_HERE:  # with a GPU the CUDA probe child imports torch (measured on a GPU machine, not here)
        assert float(seconds) < 5.0 and time.perf_counter() - started < 10.0, out


def test_broken_model_folder_stale_job_and_waiting_queue_are_reported(ws):
    broken = ws.models_dir / "half-written"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    (ws.models_dir / "fine").mkdir()
    (ws.models_dir / "fine" / "config.json").write_text('{"model_type": "qwen3"}', encoding="utf-8")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    from engine.jobs.process import process_start_time

    created = process_start_time(gone.pid)
    gone.wait()
    with JobStore(ws) as store:
        stale = store.enqueue("eval", ["true"], target="fine")
        assert store.claim(stale.id, [])
        store.set_process(stale.id, gone.pid, created)
        store.enqueue("eval", ["true"], target="fine")  # queued, and no worker runs

    found = by_name(run_report(ws, FakeInventory([])))
    models = found["model folders"]
    assert models.status == WARNING and "1 of 2 model folder(s) broken" in models.detail
    assert "half-written (config.json:" in models.detail and models.fix
    jobs = found["stale jobs"]
    assert jobs.status == WARNING and f"#{stale.id} (pid {gone.pid} gone)" in jobs.detail
    assert f"llmtui queue retry {stale.id}" in jobs.fix
    assert found["worker"].status == WARNING and "1 queued job(s)" in found["worker"].detail
    assert found["worker"].fix == "llmtui worker start"


def test_workspace_problems(tmp_path):
    missing = by_name(run_report(Workspace(tmp_path / "nowhere"), FakeInventory([])))
    assert missing["workspace"].status == ERROR and "init" in missing["workspace"].fix
    partial = Workspace(tmp_path / "partial")
    partial.state_dir.mkdir(parents=True)
    os.chmod(partial.state_dir, 0o755)
    (partial.state_dir / "worker.toml").write_text("max_paralel = 2\n", encoding="utf-8")
    found = by_name(run_report(partial, FakeInventory([])))
    assert found["workspace"].status == WARNING and "missing Datasets" in found["workspace"].detail
    assert found["state folder"].status == WARNING and "mode 755" in found["state folder"].detail
    assert found["state folder"].fix == f"chmod 700 {partial.state_dir}"
    assert found["worker"].status == ERROR and "unknown key 'max_paralel'" in found["worker"].detail


def test_vllm_interpreter_is_asked_in_its_own_process(ws, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    check = by_name(run_report(ws, FakeInventory([])))["vllm python"]
    assert check.status == ERROR and "not an executable file" in check.detail
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", sys.executable)  # a real interpreter, without vllm installed
    check = by_name(run_report(ws, FakeInventory([])))["vllm python"]
    assert check.status == ERROR and "has no vllm installed" in check.detail and "pip install vllm" in check.fix


def test_nvml_unavailable_is_reported_with_its_reason():
    if not NO_GPU_HERE:
        pytest.skip("this machine has NVML")
    driver = NvmlInventory().driver()
    assert driver.available is False and driver.reason


# ------------------------------------------------------------------------------ GPU branches (fake GPUs)


def fake_gpus(cuda: tuple[int, int] = (13, 0)) -> FakeInventory:
    """Two GPUs standing in for real ones: GPU 0 idle with one small process, GPU 1 mostly taken by another."""
    return FakeInventory([
        GpuReading(0, "Fake H100", 1 * GIB, 80 * GIB, 3.0, 40.0, "GPU-a", (9, 0), (GpuProcess(os.getpid(), GIB),)),
        GpuReading(1, "Fake T4", 14 * GIB, 16 * GIB, 99.0, 70.0, "GPU-b", (7, 5), (GpuProcess(1, None),)),
    ], DriverInfo(True, "999.1", cuda))


def probe_answer(**changes):
    """What ``python -m engine.runs.cuda_probe`` prints on such a machine."""
    answer = {"torch": "2.14.1+cu130", "cuda_build": "13.0", "cuda_available": True, "error": "", "cudnn": 91000,
              "sdpa_flash": True, "training": {"weights_dtype": "bfloat16", "mixed": "bf16"},
              "devices": [{"index": 0, "name": "Fake H100", "capability": [9, 0], "bf16": True, "memory_total": 80 * GIB},
                          {"index": 1, "name": "Fake T4", "capability": [7, 5], "bf16": False, "memory_total": 16 * GIB}],
              "bitsandbytes": {"backend": "CUDA", "library": "/x/libbitsandbytes_cuda130.so", "cuda": True, "error": ""}}
    answer.update(changes)
    return answer


def test_gpu_lines_from_the_inventory(ws, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls = []
    checks = run_report(ws, fake_gpus(), probe=lambda: calls.append(1) or probe_answer())
    found = by_name(checks)
    assert calls == [1]  # the probe runs once, only because NVML listed GPUs
    assert [c.name for c in checks if c.name.startswith("gpu ")] == ["gpu 0", "gpu 1"]
    assert found["nvidia driver"].status == OK and "driver 999.1, supports CUDA up to 13.0" in found["nvidia driver"].detail
    gpu0, gpu1 = found["gpu 0"], found["gpu 1"]
    assert gpu0.status == OK and "Fake H100, 80.0 GiB (79.0 GiB free), compute 9.0" in gpu0.detail
    assert f"processes: {os.getpid()} " in gpu0.detail and "(1.0 GiB)" in gpu0.detail
    # 14 of 16 GiB in use by someone else: the queue's scheduler will not place jobs there, and doctor says so.
    assert gpu1.status == WARNING and "treats it as busy" in gpu1.detail and "busy_gpu_memory_fraction" in gpu1.fix
    assert found["torch cuda"].status == OK and "sees 2 CUDA device(s), cuDNN 91000" in found["torch cuda"].detail
    assert found["bf16"].status == WARNING and "cuda:1 Fake T4 (compute 7.5)" in found["bf16"].detail
    assert "bfloat16 weights, mixed precision bf16" in found["bf16"].detail
    assert found["bitsandbytes native"].status == OK and "libbitsandbytes_cuda130.so" in found["bitsandbytes native"].detail
    assert found["flash attention"].status == WARNING and "Fake T4" in found["flash attention"].detail
    assert found["gptqmodel kernels"].status in (OK, WARNING) and "nvcc" in found["gptqmodel kernels"].detail


def test_cuda_runtime_against_the_driver(ws):
    cuda_build = torch_build_info()["cuda"]
    newer = by_name(run_report(ws, fake_gpus((99, 0)), probe=probe_answer))["cuda runtime"]
    older = by_name(run_report(ws, fake_gpus((1, 0)), probe=probe_answer))["cuda runtime"]
    assert older.status == ERROR and older.fix
    if cuda_build:
        assert newer.status == OK and f"built for CUDA {cuda_build}" in newer.detail
        assert "update the NVIDIA driver" in older.fix
    else:  # a CPU-only torch on a GPU machine is an error whatever the driver
        assert newer.status == ERROR and "CPU-only build" in newer.detail


def test_torch_that_cannot_use_the_gpus_is_an_error(ws, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    broken = probe_answer(cuda_available=False, devices=[], error="RuntimeError: CUDA driver initialization failed",
                          bitsandbytes={"backend": "CPU", "library": "", "cuda": False, "error": "no CUDA library"})
    checks = run_report(ws, fake_gpus(), probe=lambda: broken)
    found = by_name(checks)
    assert found["torch cuda"].status == ERROR and "CUDA driver initialization failed" in found["torch cuda"].detail
    assert found["bitsandbytes native"].status == ERROR and "no CUDA library" in found["bitsandbytes native"].detail
    assert exit_code(checks) == 1
    failing = by_name(run_report(ws, fake_gpus(), probe=lambda: {"probe_error": "exit code 1: ImportError: torch"}))
    assert failing["torch cuda"].status == ERROR and "ImportError: torch" in failing["torch cuda"].detail


def test_selected_gpus_keep_only_the_chosen_indexes():
    chosen = SelectedGpus(fake_gpus(), frozenset({1}))
    assert [r.index for r in chosen.gpus()] == [1] and chosen.driver().driver_version == "999.1"


def test_cuda_probe_runs_and_answers_json():
    """The probe itself is a real child process here too: it says torch sees no CUDA device."""
    from engine.doctor.facts import run_cuda_probe

    answer = run_cuda_probe()
    assert "probe_error" not in answer, answer
    assert answer["torch"] == torch_build_info()["version"]  # the same torch the report read without importing it
    if NO_GPU_HERE:
        assert answer["cuda_available"] is False and answer["devices"] == []
        assert answer["bitsandbytes"]["error"] == "" and answer["bitsandbytes"]["library"].endswith(
            "libbitsandbytes_cpu.so")


def test_a_job_running_on_slurm_is_not_stale_and_needs_no_local_worker(ws):
    (ws.state_dir / "worker.toml").write_text("[slurm]\nenabled = true\n", encoding="utf-8")
    with JobStore(ws) as store:
        job = store.enqueue("eval", ["true"], target="m")
        assert store.mark_submitted(job.id, "4242", 0)
        assert store.record_slurm(job.id, status="running", slurm_state="RUNNING", node="n1",
                                  started_at=time.time() - 3600) == "running"
    found = by_name(run_report(ws, FakeInventory([])))
    assert found["stale jobs"].status == OK and "(1 more on Slurm)" in found["stale jobs"].detail
    assert found["worker"].status == OK and "[slurm] enabled" in found["worker"].detail
