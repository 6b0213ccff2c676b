"""``auto``'s evaluation backend by measured speeds: predicted times from the nearest recorded model size on the
same device kind, the defaults without records, and the reason it gives."""

from __future__ import annotations

import json

from engine.runs.backend_choice import auto_backend, read_speeds, record_speed
from engine.runs.evaluate import choose_backend
from engine.models.folder import ModelKind
from engine.workspace import Workspace


def test_without_both_measurements_the_cpu_gets_the_built_in_engine_and_a_gpu_vllm(tmp_path):
    path = tmp_path / "speeds.json"
    assert auto_backend(device="cpu", params=600_000_000, items=128, path=path)[0] == "hf"
    assert auto_backend(device="gpu", params=600_000_000, items=128, path=path)[0] == "vllm"
    record_speed(backend="hf", device="cpu", params=600_000_000, items=16, generation_s=8.0, load_s=5.0, path=path)
    choice, why = auto_backend(device="cpu", params=600_000_000, items=128, path=path)
    assert choice == "hf" and "no measurement of both backends" in why


def test_the_crossover_follows_the_recorded_speeds(tmp_path):
    path = tmp_path / "speeds.json"
    # built-in: 0.5 s an item at 0.6 B, 5 s load; vLLM: 0.1 s an item at 0.6 B, 90 s start-up
    record_speed(backend="hf", device="cpu", params=600_000_000, items=16, generation_s=8.0, load_s=5.0, path=path)
    record_speed(backend="vllm", device="cpu", params=600_000_000, items=16, generation_s=1.6, load_s=90.0, path=path)
    few, why = auto_backend(device="cpu", params=600_000_000, items=100, path=path)
    assert few == "hf"  # 5 + 50 s against 90 + 10 s
    assert why.startswith("auto: the built-in engine, predicted 55 s vs 100 s for 100 items (measured here on cpu")
    many, why = auto_backend(device="cpu", params=600_000_000, items=400, path=path)
    assert many == "vllm" and "predicted 130 s vs 205 s" in why  # 90 + 40 against 5 + 200
    # a model twice the size: seconds an item double, loads as measured (crossover moves down)
    assert auto_backend(device="cpu", params=1_200_000_000, items=150, path=path)[0] == "vllm"  # 120 vs 155
    # records of another device kind are not used
    assert auto_backend(device="gpu", params=600_000_000, items=100, path=path)[0] == "vllm"


def test_records_stay_bounded_and_a_broken_file_counts_as_none(tmp_path):
    path = tmp_path / "speeds.json"
    path.write_text("{not json")
    assert read_speeds(path) == []
    for i in range(205):
        record_speed(backend="hf", device="cpu", params=1000, items=1, generation_s=1.0 + i, load_s=0.0, path=path)
    rows = json.loads(path.read_text())
    assert len(rows) == 200 and rows[-1]["seconds_per_item"] == 205.0


def test_choose_backend_uses_the_measurements_when_vllm_is_configured(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws").init()
    speeds = tmp_path / "speeds.json"
    monkeypatch.setenv("LLMTUI_EVAL_SPEEDS", str(speeds))
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", "/opt/vllm/bin/python")
    full = ModelKind("full")
    backend, python, why = choose_backend(ws, "auto", full, device="cpu", params=600_000_000, items=64)
    assert (backend, python) == ("hf", None) and why.startswith("auto: the built-in engine")
    record_speed(backend="hf", device="cpu", params=600_000_000, items=16, generation_s=32.0, load_s=5.0, path=speeds)
    record_speed(backend="vllm", device="cpu", params=600_000_000, items=16, generation_s=1.6, load_s=20.0, path=speeds)
    backend, python, why = choose_backend(ws, "auto", full, device="cpu", params=600_000_000, items=64)
    assert (backend, python) == ("vllm", "/opt/vllm/bin/python") and "auto: vLLM, predicted" in why
