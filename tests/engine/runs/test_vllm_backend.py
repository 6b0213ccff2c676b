"""The vLLM backend: item-for-item agreement with the built-in engine, the backend choice and its fallbacks.

vLLM runs in its own environment, built (once per machine, then reused) by ``./dev.sh setup-vllm``;
each vLLM start costs 30-70 s here, so only two tests start it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.runs.backend_choice import read_speeds, record_speed
from engine.runs.evaluate import EvalError, EvalOptions, choose_backend, evaluate_model
from engine.runs.loading import ModelKind
from engine.workspace import Workspace


def _rows(ws: Workspace, name: str, stem: str) -> list[dict]:
    path = ws.predictions_folder(name) / f"{stem}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_auto_uses_vllm_only_when_configured_and_able_and_vllm_says_why_not(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws").init()
    monkeypatch.delenv("LLMTUI_VLLM_PYTHON", raising=False)
    full, adapter, gptq = ModelKind("full"), ModelKind("adapter"), ModelKind("gptq")
    backend, _, why = choose_backend(ws, "auto", full)
    assert backend == "hf" and "not configured" in why
    with pytest.raises(EvalError, match="LLMTUI_VLLM_PYTHON is not set and .llmtui/worker.toml names no vllm_python"):
        choose_backend(ws, "vllm", full)
    (ws.state_dir / "worker.toml").write_text('vllm_python = "/opt/vllm/bin/python"\n')
    assert choose_backend(ws, "auto", full)[:2] == ("vllm", "/opt/vllm/bin/python")
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", "/env/python")  # the environment wins over worker.toml
    assert choose_backend(ws, "vllm", full)[:2] == ("vllm", "/env/python")
    backend, _, why = choose_backend(ws, "auto", adapter)
    assert backend == "hf" and "adapter" in why
    with pytest.raises(EvalError, match="gptq model is loaded by the built-in engine only"):
        choose_backend(ws, "vllm", gptq)
    assert choose_backend(ws, "hf", full) == ("hf", None, "requested")
    with pytest.raises(EvalError, match="'fast' is not one of auto, hf, vllm"):
        choose_backend(ws, "fast", full)


def test_a_quantized_model_falls_back_to_the_built_in_engine_and_the_metrics_say_so(demo_ws, monkeypatch,
                                                                                     tmp_path):
    from engine.runs.quantize import quantize_model

    speeds = tmp_path / "eval_speeds.json"
    monkeypatch.setenv("LLMTUI_EVAL_SPEEDS", str(speeds))
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", "/nonexistent/python")  # configured, but never started for HQQ
    name = quantize_model(demo_ws, "tiny-qwen3", "hqq", bits=4, group_size=64, device="cpu")["model_name"]
    metrics = evaluate_model(demo_ws, name, EvalOptions(datasets=["boolq"], limit=2, threads=1))
    config = metrics["eval_config"]
    assert config["backend"]["name"] == "hf" and config["backend"]["threads"] == 1
    assert config["backend_choice"]["requested"] == "auto" and "hqq" in config["backend_choice"]["reason"]
    with pytest.raises(EvalError, match="hqq model"):
        evaluate_model(demo_ws, name, EvalOptions(datasets=["boolq"], limit=2, backend="vllm", force=True))
    # the quantized kernels' speed is not the built-in engine's at this size: only the full-weight run is recorded
    assert read_speeds(speeds) == []
    evaluate_model(demo_ws, "tiny-qwen3", EvalOptions(datasets=["boolq"], limit=2, threads=1, backend="hf"))
    assert [(r["backend"], r["items"]) for r in read_speeds(speeds)] == [("hf", 2)]


@pytest.mark.slow
def test_vllm_evaluation_matches_the_built_in_engine_item_for_item(weak_arc_model, tmp_path, vllm_python,
                                                                   monkeypatch):
    """fp32 on both sides, the same token ids and stop rule: the same outputs, token counts and scores."""
    root, name = weak_arc_model
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(root, ws.root, symlinks=True)
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", vllm_python)
    # this weak model answers some items in a short box and rambles to the ceiling on others
    options = dict(datasets=["arc", "boolq"], limit=16, threads=1)
    hf = evaluate_model(ws, name, EvalOptions(backend="hf", **options))
    hf_rows = {stem: _rows(ws, name, stem) for stem in ("test-boolq", "test-ai2_arc")}
    vllm = evaluate_model(ws, name, EvalOptions(force=True, backend="vllm", **options))
    assert vllm["eval_config"]["backend"] == {"name": "vllm", "version": "0.32.0", "dtype": "float32",
                                              "threads": 1}
    assert hf["eval_config"]["backend"]["name"] == "hf" and hf["eval_config"]["backend"]["dtype"] == "float32"
    for stem, expected in hf_rows.items():
        got = _rows(ws, name, stem)
        agreement = sum(a["output"] == b["output"] for a, b in zip(got, expected))
        assert agreement == len(expected), f"{stem}: vLLM agrees with the built-in engine on {agreement}/{len(got)}"
        assert [r["tokens"] for r in got] == [r["tokens"] for r in expected]
        assert [r["correct"] for r in got] == [r["correct"] for r in expected]
    lengths = [r["tokens"] for rows in hf_rows.values() for r in rows]
    assert min(lengths) < 10 and max(lengths) == 256
    assert vllm["summary"]["overall_accuracy"] == hf["summary"]["overall_accuracy"]


@pytest.mark.slow
def test_a_model_vllm_cannot_serve_falls_back_under_auto_and_fails_clearly_under_vllm(demo_ws, vllm_python,
                                                                                      monkeypatch, tmp_path):
    """A context shorter than a prompt plus its ceiling (vLLM would not generate past it; the built-in engine
    does), and an architecture vLLM does not know (transformers loads the folder by its model_type)."""
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", vllm_python)
    # auto tries vLLM on the CPU only where this machine measured it faster: records saying so
    speeds = tmp_path / "eval_speeds.json"
    monkeypatch.setenv("LLMTUI_EVAL_SPEEDS", str(speeds))
    for backend, seconds_per_item in (("hf", 10.0), ("vllm", 0.1)):
        record_speed(backend=backend, device="cpu", params=1_000_000, items=100,
                     generation_s=100 * seconds_per_item, load_s=1.0, path=speeds)
    for name, change in (("short-context", {"max_position_embeddings": 64}),
                         ("odd-arch", {"architectures": ["NoSuchModelForCausalLM"]})):
        folder = demo_ws.models_dir / name
        shutil.copytree(demo_ws.model_dir("tiny-qwen3"), folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **change}))
    metrics = evaluate_model(demo_ws, "short-context", EvalOptions(datasets=["boolq"], limit=2))
    assert metrics["eval_config"]["backend"]["name"] == "hf"
    reason = metrics["eval_config"]["backend_choice"]["reason"]
    assert "vLLM failed" in reason and "max_model_len" in reason
    with pytest.raises(EvalError, match="vLLM cannot load .*odd-arch.*NoSuchModelForCausalLM"):
        evaluate_model(demo_ws, "odd-arch", EvalOptions(datasets=["boolq"], limit=2, backend="vllm"))
