"""The resume proof: ``llmtui train`` killed with SIGKILL after its first checkpoint, started again, ends where
an uninterrupted run ends (full fine-tuning and LoRA on the tiny demo model, CPU, fixed seeds)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.events import read_events
from engine.staging import COMPLETE_MARKER, checkpoints, latest_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS, SAVE_STEPS = 40, 10
# 64 rows in batches of 4: 16 steps an epoch, so the run crosses two epoch boundaries (the data order of a
# later epoch must be restored too)
SETTINGS = ["--set", "train.logging_steps=1", "--set", "train.per_device_train_batch_size=4", "--set",
            "data.trunc_train=64", "--set", f"train.max_steps={MAX_STEPS}", "--set", f"train.save_steps={SAVE_STEPS}"]


def _command(ws_root: Path, preset: str, events: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("LLMTUI_EVENTS", None)
    return ([sys.executable, "-m", "tui.cli", "-w", str(ws_root), "train", preset, *SETTINGS, "--events", str(events)],
            env)


def _train(ws_root: Path, preset: str, events: Path) -> subprocess.CompletedProcess:
    command, env = _command(ws_root, preset, events)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def _staging(models: Path) -> Path | None:
    found = [p for p in models.glob(".tmp-*-run-*") if p.is_dir()]
    return found[0] if found else None


def _kill_after_first_checkpoint(ws_root: Path, preset: str, events: Path) -> int:
    """Start a training, SIGKILL it as soon as a complete checkpoint exists; return that checkpoint's step."""
    command, env = _command(ws_root, preset, events)
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            staging = _staging(ws_root / "Models")
            latest = latest_checkpoint(staging) if staging else None
            if latest is not None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return latest.step
            time.sleep(0.005)
        raise AssertionError(f"no checkpoint appeared before the run ended (exit {process.poll()})")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


# Full fine-tuning and LoRA resume exactly (measured: weight and loss differences 0.0). QLoRA's steps before the
# kill match the reference exactly, but after the resume its losses drift by up to ~3e-3 (0.8 %) by step 40
# and the merged weights by ~3e-3: the 4-bit base and its float32-cast norms are rebuilt from the base
# model, and the trainer's adapter reload does not give back bit-identical numerics. So QLoRA is held to the
# stated tolerance on every step's loss instead of to equal weights.
@pytest.mark.parametrize(("preset", "exact"), [("boolq-full", True), ("boolq-lora", True),
                                               ("arc-qlora-gptq", False)])
def test_sigkilled_training_resumes_to_the_same_weights(demo_ws, tmp_path, preset, exact):
    reference_root = tmp_path / "reference"
    shutil.copytree(demo_ws.root, reference_root, symlinks=True)
    reference = _train(reference_root, preset, tmp_path / "reference.jsonl")
    assert reference.returncode == 0, reference.stderr[-3000:]

    events = tmp_path / "events.jsonl"
    seen = _kill_after_first_checkpoint(demo_ws.root, preset, events)
    first_attempt = read_events(events)
    assert [e["kind"] for e in first_attempt if e["kind"] in ("done", "saved")] == [], "killed before the end"
    assert max(e["step"] for e in first_attempt if e["kind"] == "train_step") < MAX_STEPS
    staging = _staging(demo_ws.models_dir)
    assert sorted(p.name for p in demo_ws.models_dir.iterdir()) == sorted(["tiny-qwen3", staging.name]), \
        "the killed run left its staging folder and no model folder"
    # a checkpoint half-written by a process that died mid-save (no completion mark): must be ignored
    half = staging / "checkpoint-35"
    shutil.copytree(latest_checkpoint(staging).path, half)
    (half / COMPLETE_MARKER).unlink()
    (half / "optimizer.pt").write_bytes(b"torn")

    resumed = _train(demo_ws.root, preset, events)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "half-written" in resumed.stderr and "resuming" in resumed.stderr
    second = read_events(events)[len(first_attempt):]
    start = second[0]
    assert start["kind"] == "start" and start["resumed_from_step"] >= seen and start["resumed_from_step"] % SAVE_STEPS == 0
    steps = [e["step"] for e in second if e["kind"] == "train_step"]
    assert steps[0] == start["resumed_from_step"] + 1, "(a) the first logged step after the resume follows the checkpoint"
    assert steps == list(range(start["resumed_from_step"] + 1, MAX_STEPS + 1)), "(b) it runs on to max_steps"
    assert second[-1]["kind"] == "done" and second[-1]["resumed_from_step"] == start["resumed_from_step"]

    name = start["model"]
    final = demo_ws.model_dir(name)
    assert not staging.exists() and checkpoints(final) == [], "checkpoints are deleted once the model is in place"
    # (c) CPU, fixed seeds, one thread: the resumed run's final weights equal the uninterrupted run's
    ours, theirs = _weights(final), _weights(reference_root / "Models" / name)
    assert ours.keys() == theirs.keys()
    worst = max((ours[k].float() - theirs[k].float()).abs().max().item() for k in ours)
    if exact:
        assert worst <= 1e-6, f"largest weight difference {worst}"
    ref_losses = {e["step"]: e["loss"] for e in read_events(tmp_path / "reference.jsonl") if e["kind"] == "train_step"}
    for event in second:
        if event["kind"] == "train_step":
            assert event["loss"] == pytest.approx(ref_losses[event["step"]], abs=1e-6 if exact else 1e-2)


def test_killed_during_its_final_save_the_run_resumes_at_max_steps_and_trains_no_further(demo_ws, tmp_path):
    """SIGKILL at ``train-before-final-save`` (every step done, the last checkpoint written, the model not yet
    saved): nothing looks finished, and the rerun resumes from the checkpoint at ``max_steps``, trains no step
    past it and saves the model."""
    from engine.fault_points import PAUSE_ENV, PAUSE_FILE_ENV

    settings = ["--set", "train.max_steps=2", "--set", "train.save_steps=1", "--set", "data.trunc_train=16",
                "--set", "train.logging_steps=1"]
    events, pause = tmp_path / "events.jsonl", tmp_path / "pause"
    command, env = _command(demo_ws.root, "boolq-lora", events)
    command = [*command[:command.index("--events")], *settings, "--events", str(events)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**env, PAUSE_ENV: "train-before-final-save", PAUSE_FILE_ENV: str(pause)})
    marker = Path(f"{pause}.train-before-final-save")
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"the run ended first ({process.poll()})"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = read_events(events)
    assert [e["step"] for e in first if e["kind"] == "train_step"] == [1, 2]
    assert not any(e["kind"] in ("saved", "done") for e in first)
    assert sorted(p.name for p in demo_ws.models_dir.iterdir() if not p.name.startswith(".")) == ["tiny-qwen3"]

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = read_events(events)[len(first):]
    assert second[0]["resumed_from_step"] == 2
    assert [e["step"] for e in second if e["kind"] == "train_step"] == [], "no step past max_steps (was: step 3 of 2)"
    assert second[-1]["kind"] == "done" and second[-1]["steps"] == 2
    metadata = json.loads((demo_ws.model_dir(second[0]["model"]) / "training_metadata.json").read_text())
    assert metadata["training_stats"]["total_steps"] == 2 and metadata["training_stats"]["resumed_from_step"] == 2
