"""Item 14 of issue 22: a replaced model does not inherit the old one's results, a symlinked model keeps its own
name, and two evaluations of one model never share its partial-predictions files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.files import held_lock
from engine.models.resolve import resolve_model_folder
from engine.runs.evaluate import EvalError, evaluate_model
from engine.runs.partial_predictions import PARTIAL_DIR

REPO = Path(__file__).resolve().parents[2]


def _llmtui(ws_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("LLMTUI_EVENTS", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(ws_root), *args], capture_output=True,
                          text=True, timeout=600, env=env)


def test_overwrite_sets_the_old_models_results_aside(demo_ws):
    """Before: ``--overwrite`` kept ``Testing/metrics/{name}.json``, so the new model looked evaluated and the
    pipeline's eval step failed with "already evaluated"."""
    snapshot = ["train", "boolq-full", "--set", "data.dataset=none"]
    first = _llmtui(demo_ws.root, *snapshot)
    assert first.returncode == 0, first.stderr
    name = next(r["name"] for r in json.loads(_llmtui(demo_ws.root, "models", "--json").stdout)
                if r["name"] != "tiny-qwen3")
    demo_ws.metrics_file(name).write_text(json.dumps({"datasets": {"test-boolq.parquet": {
        "type": "boolq", "accuracy": 0.5, "metrics": {"accuracy": 0.5}}}}))
    tested = {r["name"]: r["status"] for r in json.loads(_llmtui(demo_ws.root, "models", "--json").stdout)}
    assert tested[name] == "tested"
    again = _llmtui(demo_ws.root, *snapshot, "--overwrite")
    assert again.returncode == 0, again.stderr
    after = {r["name"]: r["status"] for r in json.loads(_llmtui(demo_ws.root, "models", "--json").stdout)}
    assert after[name] == "untested" and not demo_ws.metrics_file(name).exists()
    kept = list(demo_ws.metrics_file(name).parent.glob(f".{name}.replaced-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["datasets"]  # set aside, not lost


def test_a_symlinked_model_keeps_its_own_name(demo_ws):
    """Before: the reference was resolved through the link, so the metrics were written under the target's name
    and the link stayed "untested" forever."""
    (demo_ws.models_dir / "linked").symlink_to("tiny-qwen3")
    assert resolve_model_folder(demo_ws, "linked").name == "linked"


def test_a_second_evaluation_of_the_same_model_fails_at_once(demo_ws):
    """Before: two evaluations of one model appended to the same partial-predictions file without a lock."""
    lock = demo_ws.state_dir / PARTIAL_DIR / ".tiny-qwen3.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with held_lock(lock, wait=False) as held:  # stands for the first evaluation, still running
        assert held
        with pytest.raises(EvalError, match="another evaluation of tiny-qwen3 is running"):
            evaluate_model(demo_ws, "tiny-qwen3")
