"""A cancel (SIGTERM, what ``queue cancel`` sends) of a training saves a checkpoint at the step reached, and the
same command run again resumes from it (issue 22, item 7).

Before: SIGTERM raised KeyboardInterrupt at once, the run's folder was removed, and every step since the last
periodic checkpoint was lost although the grace period left time to save. Here periodic checkpoints are off
(``save_steps = 0``), so the only checkpoint there can be is the one the cancel saved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.events import EventKind, read_events
from engine.jobs.requeue import REQUEUE_EXIT_CODE
from engine.staging import latest_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ["--set", "train.logging_steps=1", "--set", "train.per_device_train_batch_size=4", "--set",
            "data.trunc_train=64", "--set", "train.max_steps=30", "--set", "train.save_steps=0"]


def _command(ws_root: Path, events: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("LLMTUI_EVENTS", None)
    return ([sys.executable, "-m", "tui.cli", "-w", str(ws_root), "train", "boolq-full", *SETTINGS,
             "--events", str(events)], env)


def _steps(events: Path) -> list[int]:
    return [e["step"] for e in read_events(events) if e.get("kind") == EventKind.TRAIN_STEP] if events.exists() else []


def test_sigterm_saves_a_checkpoint_at_the_step_reached_then_resumes(demo_ws, tmp_path):
    first = tmp_path / "first.jsonl"
    command, env = _command(demo_ws.root, first)
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and max(_steps(first), default=0) < 3:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == REQUEUE_EXIT_CODE, stderr
    assert "training stopped" in stderr and "Traceback" not in stderr
    reached = max(_steps(first))
    staging = [p for p in (demo_ws.root / "Models").glob(".tmp-*-run-*") if p.is_dir()]
    assert len(staging) == 1
    saved = latest_checkpoint(staging[0])
    assert saved is not None and reached <= saved.step <= reached + 1  # the step reached (or the one in flight)
    assert any(e.get("kind") == EventKind.STOPPED for e in read_events(first))

    second = tmp_path / "second.jsonl"
    command, env = _command(demo_ws.root, second)
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    start = next(e for e in read_events(second) if e.get("kind") == EventKind.START)
    assert start["resumed_from_step"] == saved.step
    assert min(_steps(second)) == saved.step + 1 and max(_steps(second)) == 30
