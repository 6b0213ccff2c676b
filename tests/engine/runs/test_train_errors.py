"""Training failures: one clear message naming the field/file, an ``error`` event, nothing half-written."""

from __future__ import annotations

import sys

import pytest

FAST = ["train.max_steps=3", "train.logging_steps=1", "train.per_device_train_batch_size=4", "data.trunc_train=16",
        "train.gradient_checkpointing=false", "train.max_length=128"]


def _config(ws, overrides=(), preset="boolq-full.toml"):
    from engine.presets.config import load_preset

    return load_preset(ws.experiments_dir / preset, [*FAST, *overrides])


def _fails(ws, config, *fragments, overwrite=False):
    """Run training expecting a TrainError; check its message, the error event and the Models/ folder."""
    from engine.events import read_events
    from engine.runs.train import train
    from engine.runs.train_errors import TrainError

    before = sorted(p.name for p in ws.models_dir.iterdir())
    events_file = ws.state_dir / "events.jsonl"
    with pytest.raises(TrainError) as caught:
        train(ws, config, events_path=events_file, overwrite=overwrite)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message and "Traceback" not in message
    errors = [e for e in read_events(events_file) if e["kind"] == "error"]
    assert [e["message"] for e in errors] == [message]
    assert sorted(p.name for p in ws.models_dir.iterdir()) == before, "no folder may be added or left behind"
    return message


def test_unknown_base_model_folder(demo_ws):
    _fails(demo_ws, _config(demo_ws, ['model.base="Models/no-such-model"']), "model.base", "Models/no-such-model",
           "no such model folder")


def test_missing_training_file(demo_ws):
    (demo_ws.datasets_dir / "train-boolq.parquet").unlink()
    _fails(demo_ws, _config(demo_ws), "data.dataset = 'boolq'", "train-boolq.parquet", "not found")


def test_malformed_training_file(demo_ws):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["is it red"], "answer": [True]}), demo_ws.datasets_dir / "train-boolq.parquet")
    _fails(demo_ws, _config(demo_ws), "train-boolq.parquet", "missing column 'context'")


def test_training_file_that_is_not_parquet(demo_ws):
    (demo_ws.datasets_dir / "train-boolq.parquet").write_text("question,answer\n")
    _fails(demo_ws, _config(demo_ws), "train-boolq.parquet", "not a readable Parquet file")


def test_existing_output_is_refused_without_overwrite(demo_ws):
    config = _config(demo_ws)
    existing = demo_ws.model_dir(config.output_name())
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    _fails(demo_ws, config, str(existing), "--overwrite")
    assert (existing / "keep.txt").read_text() == "mine"


def test_target_modules_missing_from_the_model(demo_ws):
    config = _config(demo_ws, ['peft.method="LoRa"', 'peft.target_modules=["attn_qkv"]'])
    _fails(demo_ws, config, "peft.target_modules = ['attn_qkv']: attn_qkv not in",
           "its linear modules are down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj")


def test_vera_with_qlora_is_refused_up_front(demo_ws):
    from engine.presets.config import ConfigError

    with pytest.raises(ConfigError, match="peft.method: VeRa cannot train on a QLORA 4-bit base"):
        _config(demo_ws, ['peft.method="VeRa"', 'quant.method="QLORA"'])
    config = _config(demo_ws)  # built without validation, as a program might: train() still refuses it
    config.peft.method, config.quant.method = "VeRa", "QLORA"
    _fails(demo_ws, config, "peft.method: VeRa cannot train on a QLORA 4-bit base", "use LoRa or DoRa")


def test_float16_full_finetuning_is_refused_on_cuda_and_trained_in_float32_on_the_cpu():
    """float16 weights cannot be fully fine-tuned: refused on CUDA; on the CPU the engine trains in float32."""
    import torch

    from engine.runs.device import HardwareError, choose_device

    if torch.cuda.is_available():
        with pytest.raises(HardwareError, match="'float16' cannot be used for full fine-tuning"):
            choose_device("float16", full_finetuning=True)
        assert choose_device("float16", full_finetuning=False).weights_dtype == "float16"
    else:
        choice = choose_device("float16", full_finetuning=True)
        assert choice.device == "cpu" and choice.weights_dtype == "float32" and choice.mixed == ""


@pytest.mark.slow
def test_out_of_memory_mid_training(demo_ws, monkeypatch):
    """CUDA cannot exist here, so the trainer's step raises a real ``torch.OutOfMemoryError`` (the exception
    CUDA raises) through a callback; the run must end with the OOM advice and leave no model folder."""
    import torch
    import engine.runs.train as engine_train

    real_callback = engine_train.progress_callback

    def callback_running_out_of_memory(events):
        callback = real_callback(events)
        real_step_end = callback.on_step_end

        def on_step_end(args, state, control, **kwargs):
            real_step_end(args, state, control, **kwargs)
            if state.global_step == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        callback.on_step_end = on_step_end
        return callback

    monkeypatch.setattr(engine_train, "progress_callback", callback_running_out_of_memory)
    message = _fails(demo_ws, _config(demo_ws), "CUDA out of memory", "per_device_train_batch_size = 4",
                     "gradient_checkpointing")
    assert "QLORA" in message
    from engine.events import read_events

    kinds = [e["kind"] for e in read_events(demo_ws.state_dir / "events.jsonl")]
    assert kinds == ["start", "train_step", "error"], "step 1 logged; step 2 ran out of memory before its log"


@pytest.mark.slow
def test_bitsandbytes_that_cannot_load(demo_ws, tmp_path):
    """A bitsandbytes build that fails at import (as a CUDA mismatch does) gives the install advice. It runs in
    its own process with a stand-in package that raises on import, so this process's bitsandbytes stays intact."""
    import os
    import subprocess
    from pathlib import Path

    from engine.events import read_events

    broken = tmp_path / "broken" / "bitsandbytes"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("CUDA Setup failed despite GPU being available: '
                                        'libbitsandbytes_cuda130.so not found")\n')
    repo = Path(__file__).resolve().parents[3]
    events = demo_ws.root / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken.parent), str(repo)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(demo_ws.root), "train", "boolq-full",
                           *[a for o in FAST for a in ("--set", o)], "--set", 'peft.method="LoRa"',
                           "--set", 'quant.method="QLORA"', "--events", str(events)],
                          capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "quant.method = 'QLORA'" in done.stderr and "pip install -U bitsandbytes" in done.stderr
    assert "Traceback" not in done.stderr
    (error,) = [e for e in read_events(events) if e["kind"] == "error"]
    assert "bitsandbytes" in error["message"]
    assert sorted(p.name for p in demo_ws.models_dir.iterdir()) == ["tiny-qwen3"]
