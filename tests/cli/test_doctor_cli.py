"""``llmtui doctor`` as a user runs it: the report (JSON and text, exit status), a bad --gpu, and the smoke run
of every CPU path with the CUDA rows skipped on this GPU-less machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.jobs.gpu import NvmlInventory
from engine.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
CHECK_KEYS = {"name", "status", "detail", "fix", "seconds"}
SMOKE_ROWS = ["smoke workspace", "train full fine-tune", "train LoRA", "train QLoRA", "merge QLoRA adapter",
              "quantize GPTQ", "quantize AWQ", "quantize HQQ", "quantize INT8", "quantize NF4", "eval HF (queue job)",
              "eval vLLM", "NVML during a job", "data-parallel 2 GPUs", "scheduler 2 jobs"]
CUDA_ROWS = ["NVML during a job", "data-parallel 2 GPUs", "scheduler 2 jobs"]


def doctor(ws_root: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLMTUI_VLLM_PYTHON", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(ws_root), "doctor", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def test_report_json_and_text_agree_with_the_exit_status(tmp_path):
    ws = Workspace(tmp_path / "ws").init()
    done = doctor(ws.root, "--json")
    checks = json.loads(done.stdout)
    assert checks and all(set(check) == CHECK_KEYS for check in checks)
    failed = [c for c in checks if c["status"] in ("error", "fail")]
    assert done.returncode == (1 if failed else 0), failed
    assert {"python", "torch", "nvidia driver", "bitsandbytes native", "workspace", "stale jobs", "worker"} <= \
        {c["name"] for c in checks}

    (ws.models_dir / "broken").mkdir()  # no config.json: not a loadable model folder
    text = doctor(ws.root)
    assert text.returncode == done.returncode
    lines = text.stdout.splitlines()
    assert any(line.startswith("warning  model folders") for line in lines), text.stdout
    assert any(line.strip().startswith("fix: repair or delete them") for line in lines)
    assert lines[-1].startswith("report: ") or lines[-2].startswith("report: ")


def test_missing_workspace_fails_and_unknown_gpu_is_refused(tmp_path):
    done = doctor(tmp_path / "nowhere", "--json")
    workspace = next(c for c in json.loads(done.stdout) if c["name"] == "workspace")
    assert done.returncode == 1 and workspace["status"] == "error" and "does not exist" in workspace["detail"]
    bad = doctor(tmp_path, "--gpu", "99")
    assert bad.returncode == 2 and "--gpu '99': no GPU 99" in bad.stderr and "Traceback" not in bad.stderr
    assert doctor(tmp_path, "--gpu", "x").returncode == 2


@pytest.mark.slow
@pytest.mark.skipif(bool(NvmlInventory().gpus()), reason="asserts the CPU answers of a machine without a GPU")
def test_smoke_runs_the_cpu_paths_green_and_skips_the_cuda_rows(tmp_path):
    """The same command a user runs on a new GPU box; here (no GPU) the CPU paths run for real."""
    ws = Workspace(tmp_path / "ws").init()
    done = doctor(ws.root, "--smoke", "--json", timeout=900)
    checks = json.loads(done.stdout)
    smoke = {c["name"]: c for c in checks[-len(SMOKE_ROWS):]}
    assert list(smoke) == SMOKE_ROWS
    for name in SMOKE_ROWS:
        if name in CUDA_ROWS:
            assert smoke[name]["status"] == "skipped" and smoke[name]["detail"] == "skipped: no CUDA device"
        elif name == "eval vLLM":
            assert smoke[name]["status"] == "skipped" and "LLMTUI_VLLM_PYTHON is not set" in smoke[name]["detail"]
        else:
            assert smoke[name]["status"] == "pass", smoke[name]
            assert smoke[name]["seconds"] > 0
    assert "5 steps on cpu, float32 weights" in smoke["train full fine-tune"]["detail"]
    assert "adapter folder" in smoke["train QLoRA"]["detail"] and "merged folder" in smoke["merge QLoRA adapter"]["detail"]
    for method, layer in (("GPTQ", "TorchFused"), ("AWQ", "TorchFusedAwq"), ("HQQ", "HQQLinear"),
                          ("INT8", "Linear8bitLt"), ("NF4", "Linear4bit")):
        assert f"reloads with {layer}" in smoke[f"quantize {method}"]["detail"]
    assert "16 BoolQ items as queue job #1 (worker → llmtui eval) on the CPU" in smoke["eval HF (queue job)"]["detail"]
    assert done.returncode == 0, [c for c in checks if c["status"] in ("error", "fail")]
    scratch = Path(smoke["smoke workspace"]["detail"].split(" in ", 1)[1].split(" (")[0])
    assert "steps below run on the CPU, queue jobs on no GPU" in smoke["smoke workspace"]["detail"]
    assert scratch.name.startswith("llmtui-smoke-") and not scratch.exists(), "removed after a clean run"
    assert "smoke: 11 pass, 4 skipped" in done.stderr  # progress lines go to stderr when stdout is JSON
