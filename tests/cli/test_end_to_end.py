"""The whole path on the demo workspace: train → `llmtui eval --untested` → `llmtui compare`.

Uses the session's trained BoolQ model (one real training run) and the untrained demo base; the
paired statistics are checked against values computed by hand from the predictions files.
"""

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from engine.workspace import Workspace

pytestmark = pytest.mark.slow


def _llmtui(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def evaluated_ws(trained_boolq_model, tmp_path_factory):
    root, trained = trained_boolq_model
    copy = tmp_path_factory.mktemp("e2e") / "ws"
    shutil.copytree(root, copy, symlinks=True)
    result = _llmtui("-w", str(copy), "eval", "--untested", "--datasets", "boolq", "--limit", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    return Workspace(copy), trained


def _predictions(ws, name):
    path = ws.predictions_folder(name) / "test-boolq.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _gold_and_predicted_true(row):
    """(gold, predicted True); a missing prediction counts as the opposite of gold."""
    assert isinstance(row["gold"], bool) and (row["pred"] is None or isinstance(row["pred"], bool)), row
    return row["gold"], (not row["gold"]) if row["pred"] is None else row["pred"]


def _mcc(pairs):
    tp = sum(g and p for g, p in pairs)
    tn = sum(not g and not p for g, p in pairs)
    fp = sum(not g and p for g, p in pairs)
    fn = sum(g and not p for g, p in pairs)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def test_untested_orchestrator_evaluates_every_demo_model(evaluated_ws):
    ws, trained = evaluated_ws
    models = json.loads(_llmtui("-w", str(ws.root), "models", "--json").stdout)
    assert {m["name"]: m["status"] for m in models} == {"tiny-qwen3": "tested", trained: "tested"}
    for name in ("tiny-qwen3", trained):
        metrics = json.loads(ws.metrics_file(name).read_text())
        block = metrics["datasets"]["test-boolq.parquet"]
        rows = _predictions(ws, name)
        assert len(rows) == block["total_samples"] == 60
        assert sum(r["correct"] for r in rows) == block["correct"]
        assert block["accuracy"] == pytest.approx(block["correct"] / 60)
    assert json.loads(ws.metrics_file(trained).read_text())["datasets"]["test-boolq.parquet"]["accuracy"] >= 0.9


def test_compare_reports_mcnemar_and_bootstrap_matching_hand_computation(evaluated_ws):
    ws, trained = evaluated_ws
    result = _llmtui("-w", str(ws.root), "compare", "tiny-qwen3", trained, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    base_rows, trained_rows = _predictions(ws, "tiny-qwen3"), _predictions(ws, trained)
    b = sum(x["correct"] and not y["correct"] for x, y in zip(base_rows, trained_rows))
    c = sum(y["correct"] and not x["correct"] for x, y in zip(base_rows, trained_rows))
    n = b + c
    p_hand = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n)
    (boolq,) = [d for d in data["datasets"] if d["file"] == "test-boolq.parquet"]
    metrics = {m["metric"]: m for m in boolq["metrics"]}
    (accuracy,) = metrics["accuracy"]["pairs"]
    assert accuracy["test"] == "mcnemar" and (accuracy["b"], accuracy["c"]) == (b, c)
    assert accuracy["p_value"] == pytest.approx(p_hand, rel=1e-9)
    assert accuracy["significant"] == (p_hand < 0.05)
    (mcc,) = metrics["mcc"]["pairs"]
    assert mcc["test"] == "bootstrap" and mcc["ci_low"] <= mcc["delta"] <= mcc["ci_high"]
    # The bootstrap recomputed by hand: MCC per resample in plain Python, on the same seeded draws
    # (seed 0, 1,000 resamples, one draw of shape (resamples, n) as the engine makes for n this small).
    pairs_a = [_gold_and_predicted_true(r) for r in base_rows]
    pairs_b = [_gold_and_predicted_true(r) for r in trained_rows]
    observed = _mcc(pairs_b) - _mcc(pairs_a)
    draws = np.random.default_rng(0).integers(0, len(pairs_a), size=(1000, len(pairs_a)))
    deltas = [_mcc([pairs_b[i] for i in row]) - _mcc([pairs_a[i] for i in row]) for row in draws]
    extreme = sum(abs(d - observed) >= abs(observed) - 1e-12 for d in deltas)
    assert mcc["delta"] == pytest.approx(observed, abs=1e-12)
    assert mcc["p_value"] == pytest.approx(min(1.0, (1 + extreme) / 1001), rel=1e-9)
    assert (mcc["ci_low"], mcc["ci_high"]) == pytest.approx(tuple(np.quantile(deltas, [0.025, 0.975])), abs=1e-12)
    markdown = _llmtui("-w", str(ws.root), "compare", "tiny-qwen3", trained, "--markdown")
    assert markdown.returncode == 0 and "mcnemar" in markdown.stdout.lower()
