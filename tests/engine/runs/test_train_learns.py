"""Proof that training really learns: the tiny demo model goes from chance to >= 90 % on held-out BoolQ.

The held-out items are scored by the evaluation engine (``engine.runs.evaluate``: the shared prompt builder,
greedy generation, ``\\boxed{}`` extraction), so this also proves that training and evaluation see the
same prompt and that the answer format is learned.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.slow

HELD_OUT = 100


def test_full_finetuning_learns_boolq_from_chance_to_90_percent(trained_boolq_model, tmp_path):
    from engine.runs.evaluate import EvalOptions, evaluate_model
    from engine.workspace import Workspace

    root, name = trained_boolq_model
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(root, ws.root, symlinks=True)  # evaluation writes metrics; keep the shared fixture clean
    options = EvalOptions(datasets=["boolq"], limit=HELD_OUT, device="cpu")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the untrained base generates 256 tokens per item; threads thrash on a busy machine
    try:
        before = evaluate_model(ws, "tiny-qwen3", options)["datasets"]["test-boolq.parquet"]
        after = evaluate_model(ws, name, options)["datasets"]["test-boolq.parquet"]
    finally:
        torch.set_num_threads(threads)
    assert after["total_samples"] == HELD_OUT
    assert before["accuracy"] <= 0.6, f"the untrained base should be at chance or below, got {before['accuracy']}"
    assert after["format_success_rate"] == 1.0, "every answer must be in the \\boxed{} form"
    assert after["accuracy"] >= 0.9, f"held-out accuracy after training {after['accuracy']:.2f} < 0.90"


def test_trained_folder_has_the_contract_metadata(trained_boolq_model):
    root, name = trained_boolq_model
    folder = root / "Models" / name
    assert name == "tiny-qwen3-boolq_SFT_NoPeft_NoQuant"
    for required in ("config.json", "model.safetensors", "tokenizer.json", "training_metadata.json", "preset.toml"):
        assert (folder / required).is_file(), required
    assert not list((root / "Models").glob(".tmp-*")), "no staging folder may be left behind"
    meta = json.loads((folder / "training_metadata.json").read_text())
    info = meta["model_info"]
    assert info["model_name"] == name and info["base_model"] == "Models/tiny-qwen3"
    assert info["base_model_path"] == str((root / "Models" / "tiny-qwen3").resolve())
    assert info["model_type"] == "full" and info["quantization_tag"] == "NoQuant" and info["has_quantization"] is False
    assert info["trainable_params"] == info["total_params"] > 0 and info["percentage_trainable"] == 100.0
    preset = meta["training_parameters"]["preset"]
    assert preset["train"]["max_steps"] == 500 and preset["train"]["lr_scheduler_type"] == "cosine"
    trl = meta["training_parameters"]["trl_args"]
    assert trl["learning_rate"] == 2e-3 and trl["use_cpu"] is True and trl["warmup_steps"] == 0.0
    assert meta["peft_config"] is None and meta["quantization_config"] is None
    assert meta["quantization"]["quant_tag"] == "NoQuant"
    stats = meta["training_stats"]
    assert stats["total_steps"] == 500 and stats["epochs_completed"] > 1
    assert stats["final_loss"] < 0.05 and stats["train_runtime_s"] > 0 and stats["tokens_per_s"] > 0
    assert meta["data"]["prefix_mismatches"] == 0, "the tokenized prompt must be a prefix of prompt+completion"
    hardware = meta["hardware_info"]
    assert hardware["device"] == "cpu" and hardware["dtype"] == "float32" and hardware["peak_rss_gb"] > 0
    assert hardware["vram_peaks"] == {"overall": {"peak_allocated_gb": None, "peak_reserved_gb": None}, "per_gpu": []}
    assert "boolq" in (folder / "preset.toml").read_text()


def test_training_events_stream(trained_boolq_model):
    from engine.events import read_events

    root, name = trained_boolq_model
    events = read_events(root / ".llmtui" / "trained-boolq-events.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["saved", "done"] and "error" not in kinds
    steps = [e for e in events if e["kind"] == "train_step"]
    assert [e["step"] for e in steps] == list(range(10, 501, 10))
    for event in steps:
        assert set(event) >= {"t", "step", "max_steps", "epoch", "loss", "learning_rate", "grad_norm",
                              "tokens_per_s", "gpu_mem_gb"}
        assert event["max_steps"] == 500 and event["gpu_mem_gb"] is None
    assert all(e["tokens_per_s"] > 0 for e in steps)
    assert steps[-1]["loss"] < steps[0]["loss"] / 10
    assert events[-1]["output"] == str(root / "Models" / name)
