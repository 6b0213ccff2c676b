"""Resumable evaluation: an ``llmtui eval`` killed with SIGKILL mid-run, started again, generates only the
missing items and writes the metrics and predictions of an uninterrupted run; changed settings discard
the partial file with a log line saying why."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.events import read_events
from engine.runs.evaluate import Generation
from engine.runs.partial_predictions import PartialPredictions, partial_path
from engine.workspace import Workspace

REPO = Path(__file__).resolve().parents[3]
#: Keys that measure time or memory (they differ between any two runs) or say how the run went.
#: Measurements of the machine, not results: ``threads`` is picked from the cores idle when each run starts.
VOLATILE = {"evaluated_at", "throughput", "hardware", "latency_seconds", "latency_s", "items_per_second",
            "resumed_items", "peak_vram_reserved_gb", "peak_vram_allocated_gb", "peak_rss_gb", "threads"}


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _eval_command(root: Path, name: str, events: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("LLMTUI_EVENTS", None)
    return ([sys.executable, "-m", "tui.cli", "-w", str(root), "eval", name, "--datasets", "boolq", "--limit", "60",
             "--batch-size", "2", "--events", str(events), *extra], env)


def test_partial_file_with_other_settings_is_discarded_and_a_torn_line_ignored(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    first = PartialPredictions(path, {"model": "m1", "limit": 60})
    assert first.load() == {}
    first.append([(0, Generation("\\boxed{True}", 5, 0.1)), (3, Generation("x", 1, 0.2))])
    with open(path, "a") as handle:
        handle.write('{"i": 4, "text": "tor')  # the process died mid-write
    again = PartialPredictions(path, {"model": "m1", "limit": 60})
    assert again.load() == {0: {"text": "\\boxed{True}", "tokens": 5, "latency_s": 0.1},
                            3: {"text": "x", "tokens": 1, "latency_s": 0.2}}
    assert again.resumed == 2
    with caplog.at_level(logging.WARNING, logger="llmtui.eval"):
        changed = PartialPredictions(path, {"model": "m1", "limit": 50})
        assert changed.load() == {} and changed.resumed == 0
    assert "discarded the partial predictions" in caplog.text and "limit 60 -> 50" in caplog.text
    assert json.loads(path.read_text().splitlines()[0]) == {"settings": {"model": "m1", "limit": 50}}


@pytest.mark.slow
def test_killed_evaluation_resumes_to_the_uninterrupted_result(trained_boolq_model, tmp_path):
    source, name = trained_boolq_model
    root = tmp_path / "ws"
    shutil.copytree(source, root, symlinks=True)
    ws = Workspace(root)
    events = tmp_path / "events.jsonl"
    partial = partial_path(ws, name, "test-boolq.parquet")

    command, env = _eval_command(root, name, events)
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if partial.is_file() and len(partial.read_text().splitlines()) > 10:  # a few batches finished
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "killed mid-evaluation"
    assert not ws.metrics_file(name).exists(), "a killed evaluation writes no metrics file"
    done_before = len(partial.read_text().splitlines()) - 1
    first_attempt = len(read_events(events))

    command, env = _eval_command(root, name, events)
    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already generated" in resumed.stderr
    progress = [e for e in read_events(events)[first_attempt:] if e["kind"] == "eval_progress"]
    assert progress[0]["done"] >= done_before and progress[0]["resumed"] == progress[0]["done"] > 0
    assert progress[-1]["done"] == progress[-1]["total"] == 60
    assert not partial.exists(), "the partial file is deleted once the metrics file is written"
    metrics = json.loads(ws.metrics_file(name).read_text())
    assert metrics["datasets"]["test-boolq.parquet"]["resumed_items"] == progress[0]["resumed"]
    rows = [json.loads(line) for line in (ws.predictions_folder(name) / "test-boolq.jsonl").read_text().splitlines()]

    # the uninterrupted run, in the same workspace (same paths in the metrics file)
    command, env = _eval_command(root, name, tmp_path / "reference.jsonl", "--force")
    reference = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = json.loads(ws.metrics_file(name).read_text())
    expected_rows = [json.loads(line) for line in
                     (ws.predictions_folder(name) / "test-boolq.jsonl").read_text().splitlines()]
    assert _stable(rows) == _stable(expected_rows), "greedy decoding: identical predictions"
    assert _stable(metrics) == _stable(expected)
