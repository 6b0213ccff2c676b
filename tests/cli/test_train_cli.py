"""``llmtui train`` as the job queue runs it: a subprocess with plain output, events, exit codes, SIGTERM,
base snapshots and data-parallel training on two CPU ranks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.events import read_events

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FAST = ["--set", "train.logging_steps=1", "--set", "train.per_device_train_batch_size=4", "--set",
        "data.trunc_train=32", "--set", "train.max_length=128"]


def llmtui(ws_root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("LLMTUI_EVENTS", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(ws_root), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def test_train_command_writes_model_events_and_plain_progress(demo_ws):
    events = demo_ws.root / "events.jsonl"
    done = llmtui(demo_ws.root, "train", "boolq-lora", *FAST, "--set", "train.max_steps=4", "--set",
                  "data.trunc_eval=8", "--events", str(events))
    assert done.returncode == 0, done.stderr
    name = "tiny-qwen3-boolq_SFT_LoRa16_NoQuant"
    folder = demo_ws.models_dir / name
    assert (folder / "model.safetensors").is_file(), "boolq-lora merges after training"
    lines = done.stdout.splitlines()
    assert [line.split("  ")[0].split(" ", 1)[1] for line in lines if re.match(r"\d\d:\d\d:\d\d step ", line)] == \
        [f"step {i}/4" for i in range(1, 5)], done.stdout
    assert "\x1b[" not in done.stdout, "no terminal control codes when stdout is not a terminal"
    assert f"saved {folder}" in done.stdout
    kinds = [e["kind"] for e in read_events(events)]
    assert kinds == ["start", *["train_step"] * 4, "eval", "saved", "done"]
    evaluation = read_events(events)[5]
    assert evaluation["step"] == 4 and evaluation["eval_loss"] > 0, "trainer evaluation on 8 test rows at the end"
    assert done.stdout.count("eval at step 4: loss") == 1
    preset_copy = (folder / "preset.toml").read_text()
    assert "train.max_steps=4" in preset_copy and "max_steps = 4" in preset_copy

    again = llmtui(demo_ws.root, "train", "boolq-lora", *FAST, "--set", "train.max_steps=4", "--events", str(events))
    assert again.returncode == 1
    assert "already exists" in again.stderr and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert read_events(events)[-1]["kind"] == "error"


def test_invalid_preset_exits_2_with_an_error_event(demo_ws):
    events = demo_ws.root / "events.jsonl"
    done = llmtui(demo_ws.root, "train", "boolq-full", "--set", "train.learning_rate=-1", "--events", str(events))
    assert done.returncode == 2
    assert "train.learning_rate" in done.stderr and "Traceback" not in done.stderr
    (error,) = read_events(events)
    assert error["kind"] == "error" and "train.learning_rate" in error["message"]


def test_base_snapshot(demo_ws):
    done = llmtui(demo_ws.root, "train", "base-snapshot")
    assert done.returncode == 0, done.stderr
    folder = demo_ws.models_dir / "tiny-qwen3-base"
    meta = json.loads((folder / "training_metadata.json").read_text())
    assert meta["model_info"]["model_type"] == "full" and meta["model_info"]["trainable_params"] == 0
    assert meta["training_stats"]["total_steps"] == 0 and meta["training_parameters"]["trl_args"] is None
    from safetensors.numpy import load_file

    base = load_file(demo_ws.models_dir / "tiny-qwen3" / "model.safetensors")
    snapshot = load_file(folder / "model.safetensors")
    assert base.keys() == snapshot.keys() and all((base[k] == snapshot[k]).all() for k in base)


def test_sigterm_leaves_no_model_folder(demo_ws):
    """The queue cancels a job with SIGTERM: the run saves a checkpoint in its hidden staging folder, stops, says
    so in a ``stopped`` event, and leaves no model folder that looks finished (issue 22: before, SIGTERM
    unwound at once and the steps were lost)."""
    events = demo_ws.root / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", "-w", str(demo_ws.root), "train", "boolq-full",
                                *FAST, "--set", "train.max_steps=100000", "--events", str(events)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.time() + 240
    while time.time() < deadline and not any(e["kind"] == "train_step" for e in read_events(events)):
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr  # engine.jobs.requeue.REQUEUE_EXIT_CODE: state saved, run again
    kinds = [e["kind"] for e in read_events(events)]
    assert "train_step" in kinds and kinds[-1] == "stopped" and "done" not in kinds
    assert sorted(p.name for p in demo_ws.models_dir.iterdir() if not p.name.startswith(".")) == ["tiny-qwen3"]


def test_data_parallel_on_two_cpu_ranks(demo_ws):
    """train.gpus = 2 relaunches under accelerate: world size 2, both ranks train, only rank 0 saves."""
    events = demo_ws.root / "events.jsonl"
    done = llmtui(demo_ws.root, "train", "boolq-full", *FAST, "--set", "train.max_steps=4", "--set", "train.gpus=2",
                  "--events", str(events), timeout=480)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = demo_ws.models_dir / "tiny-qwen3-boolq_SFT_NoPeft_NoQuant"
    meta = json.loads((folder / "training_metadata.json").read_text())
    hardware = meta["hardware_info"]
    assert hardware["world_size"] == 2 and len(hardware["peak_rss_gb_per_rank"]) == 2
    assert all(rss > 0 for rss in hardware["peak_rss_gb_per_rank"]), "both ranks report their memory"
    # Four steps of 4 examples on each of two ranks: 32 examples, one epoch of the 32-row train set.
    assert meta["training_stats"]["epochs_completed"] == pytest.approx(1.0)
    assert meta["training_parameters"]["trl_args"]["per_device_train_batch_size"] == 4
    start = read_events(events)[0]
    assert start["kind"] == "start" and start["world_size"] == 2
    assert [e["kind"] for e in read_events(events)].count("start") == 1, "only rank 0 writes events"
    assert sorted(p.name for p in demo_ws.models_dir.iterdir()) == ["tiny-qwen3", folder.name]

    again = llmtui(demo_ws.root, "train", "boolq-full", *FAST, "--set", "train.max_steps=4", "--set", "train.gpus=2",
                   "--events", str(events))
    assert again.returncode == 1 and "already exists" in again.stderr, "refused before any rank starts"
    assert "data-parallel training on" not in again.stdout
    assert read_events(events)[-1]["kind"] == "error"
