"""A reduced real-architecture model — Qwen3-0.6B's real hidden size, heads and 151,936-entry vocabulary with 2
layers (~0.19 B parameters, bf16, as published) — via LoRA → merge → HQQ and GPTQ (each reloaded) → evaluation,
each stage a real child process (the ``llmtui`` commands) whose measured peak resident memory must stay within the
estimate ``engine.models.estimate`` gives for it on the CPU (the bench, bench/real_size.py, does the full-size runs)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import CHAT_TEMPLATES, REAL_CONFIGS, SHARED_DATASETS
from engine.jobs.peak import run_measured
from engine.models.estimate import (ModelShape, inference_estimate, merge_estimate, quantize_estimate,
                                    train_estimate)
from engine.workspace import Workspace

pytestmark = pytest.mark.skipif(not REAL_CONFIGS.is_dir() or not SHARED_DATASETS.is_dir(),
                                reason="../shared/real-configs or ../shared/datasets is not here")
REPO = Path(__file__).resolve().parents[3]
BUILD = ("import sys; from pathlib import Path; from engine.data.synthetic import corpus_for_tokenizer; "
         "from engine.runs.real_size import build_real_size_model; "
         "build_real_size_model(sys.argv[1], '0.6b', sys.argv[2], sys.argv[3], corpus_for_tokenizer(sys.argv[4]), "
         "num_layers=2)")
MERGE = "import sys; from engine.runs.loading import save_merged; save_merged(sys.argv[1], sys.argv[2])"
PRESET = """[model]
base = "Models/real-2l"
[data]
dataset = "boolq"
trunc_train = 4
[peft]
method = "LoRa"
r = 16
alpha = 32
target_modules = ["attention"]
[train]
per_device_train_batch_size = 1
gradient_accumulation_steps = 1
max_steps = 1
max_length = 256
save_steps = 0
"""


def test_lora_merge_quantize_eval_each_within_its_estimate(tmp_path):
    ws = Workspace(tmp_path / "ws").init()
    for name in ("train-boolq.parquet", "test-boolq.parquet"):
        shutil.copy(SHARED_DATASETS / name, ws.datasets_dir / name)
    (ws.datasets_dir / "datasets.toml").write_text('[quick]\nkind = "boolq"\nfile_stem = "boolq"\nmax_new_tokens = 4\n')
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    log = tmp_path / "stages.log"
    python = sys.executable

    def stage(*argv: str):
        done = run_measured(list(argv), env=env, cwd=REPO, timeout=900, log=log)
        assert done.rc == 0, f"{argv[:6]} failed:\n{log.read_text()[-3000:]}"
        return done

    base = ws.models_dir / "real-2l"
    stage(python, "-c", BUILD, str(base), str(REAL_CONFIGS), str(CHAT_TEMPLATES), str(ws.datasets_dir))
    config = json.loads((base / "config.json").read_text())
    assert (config["hidden_size"], config["vocab_size"], config["num_hidden_layers"]) == (1024, 151_936, 2)
    shape = ModelShape.from_file(base / "config.json")

    preset = ws.experiments_dir / "lora.toml"
    preset.write_text(PRESET)
    llmtui = [python, "-m", "tui.cli", "-w", str(ws.root)]
    peaks = {"LoRA": (stage(*llmtui, "train", str(preset)),
                      train_estimate(shape, device="cpu", r=16, targets="attention", seq=256, accumulation=1))}
    adapter = next(p for p in ws.models_dir.iterdir() if "LoRa16" in p.name)
    assert (adapter / "adapter_config.json").is_file()
    merged = ws.models_dir / "real-2l-merged"
    peaks["merge"] = (stage(python, "-c", MERGE, str(adapter), str(merged)),
                      merge_estimate(shape, device="cpu", r=16, targets="attention"))
    peaks["HQQ"] = (stage(*llmtui, "quantize", str(merged), "--method", "hqq", "--device", "cpu", "--out", "hqq"),
                    quantize_estimate(shape, device="cpu", method="hqq"))
    # GPTQ's own loader read its checkpoint through a disk offload (a second copy while loading): the reload's
    # bound holds only without it (engine.runs.ptq_backends._without_disk_offload)
    peaks["GPTQ"] = (stage(*llmtui, "quantize", str(merged), "--method", "gptq", "--samples", "2", "--calibration",
                           "boolq", "--device", "cpu", "--out", "gptq"),
                     quantize_estimate(shape, device="cpu", method="gptq", samples=2, seq=256))
    peaks["GPTQ reload"] = (stage(*llmtui, "eval", "gptq", "--datasets", "quick", "--limit", "1", "--backend", "hf",
                                  "--device", "cpu"),
                            inference_estimate(shape, device="cpu", bits=4, context=256, step="reload", method="gptq"))
    peaks["eval"] = (stage(*llmtui, "eval", "hqq", "--datasets", "quick", "--limit", "2", "--backend", "hf",
                           "--device", "cpu"),
                     inference_estimate(shape, device="cpu", bits=4, batch=2, context=1024))
    metrics = json.loads(ws.metrics_file("hqq").read_text())
    assert metrics["summary"]["total_samples"] == 2
    report = {name: (round(m.peak_bytes / 1e9, 2), e.gb) for name, (m, e) in peaks.items()}
    for name, (measured, estimate) in peaks.items():
        assert measured.peak_bytes <= estimate.bytes, f"{name}: peak above the estimate (GB: {report})"
        assert estimate.bytes <= 2.5 * measured.peak_bytes, f"{name}: the estimate is no useful bound (GB: {report})"
