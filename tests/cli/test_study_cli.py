"""Studies end to end on the demo workspace, with a real worker and real job processes: a grid of 2 training variants ×
2 HQQ bit widths (+ the base) and a 6-trial Optuna search over the learning rate, each surviving a worker kill.

The worker runs two jobs at a time (the jobs are tiny; their start-up dominates). Holm's adjustment and the
Pareto flags are recomputed here from the table's raw values, independently of engine.results.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from engine.jobs.store import JobStore
from engine.jobs.worker import ensure_worker, stop_worker, worker_pid
from engine.workspace import Workspace

pytestmark = pytest.mark.slow

#: Trained for a few steps, evaluated on 24 items of a short-answer BoolQ set (tests/conftest.py's QUICK_TASK).
GRID = """# 2 training variants × 2 HQQ bit widths, + the base model as the table's root
[study]
base = "boolq-lora.toml"

[study.set]
"train.max_steps" = 40
"eval.limit" = 24
"eval.datasets" = ["quick"]
ptq = [{ method = "HQQ", bits = 4, group_size = 64 }, { method = "HQQ", bits = 8, group_size = 64 }]

[study.axes]
"peft.method" = ["LoRa", "DoRa"]
"""

SEARCH = """[study]
base = "boolq-lora.toml"

[study.set]
"train.max_steps" = 12
"eval.limit" = 16
"eval.datasets" = ["quick"]

[study.search]
n_trials = 6
objective = "quick.accuracy"
direction = "maximize"
parallel = 2

[study.search.space]
"train.learning_rate" = { low = 1e-4, high = 1e-2, log = true }
"""
TIMEOUT_S = 1500


def _llmtui(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(ws.root), *args], capture_output=True,
                          text=True, timeout=300)


def _json(ws: Workspace, *args: str):
    result = _llmtui(ws, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _workspace(demo_template, tmp_path_factory, name: str, text: str) -> Workspace:
    from tests.conftest import QUICK_TASK

    root = tmp_path_factory.mktemp(name) / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    ws = Workspace(root)
    (ws.datasets_dir / "datasets.toml").write_text(QUICK_TASK)
    (ws.experiments_dir / f"{name}.toml").write_text(text)
    return ws


def _kill_worker(ws: Workspace) -> None:
    pid = worker_pid(ws)
    assert pid, "the worker should be running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while worker_pid(ws) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not worker_pid(ws)


def _wait(condition, what: str, ws: Workspace) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            log = (ws.state_dir / "worker.log").read_text() if (ws.state_dir / "worker.log").exists() else ""
            pytest.fail(f"timed out waiting for {what}; worker log:\n{log[-3000:]}")
        time.sleep(2)


def _jobs(ws: Workspace):
    with JobStore(ws) as store:
        return store.list()


@pytest.fixture(scope="module")
def grid_ws(demo_template, tmp_path_factory):
    """The grid run to completion: queued by ``study run`` (twice), the worker killed mid-way and restarted."""
    ws = _workspace(demo_template, tmp_path_factory, "grid", GRID)
    ensure_worker(ws, max_parallel=2)
    first = _json(ws, "study", "run", "grid", "--json")
    second = _json(ws, "study", "run", "grid", "--json")
    _wait(lambda: any(j.kind == "quantize" and j.status in ("running", "done") for j in _jobs(ws)),
          "the first PTQ job", ws)
    _kill_worker(ws)
    after_kill = _json(ws, "study", "run", "grid", "--json")  # queues nothing and starts a worker again
    try:
        _wait(lambda: _json(ws, "study", "plan", "grid", "--json")["counts"]["done"] == 13, "the whole study", ws)
    finally:
        stop_worker(ws)
    third = _json(ws, "study", "run", "grid", "--json", "--no-start")
    return ws, first, second, after_kill, third


def test_study_run_queues_every_job_once_and_nothing_the_second_time(grid_ws):
    ws, first, second, after_kill, third = grid_ws
    assert len(first["queued"]) == 13  # 2 trainings, 4 HQQ outputs, 7 evaluations (the base's included)
    assert second["queued"] == [] and after_kill["queued"] == [] and third["queued"] == []
    assert sorted(third["skipped"]) == ["tiny-qwen3-boolq_SFT_DoRa16_NoQuant", "tiny-qwen3-boolq_SFT_LoRa16_NoQuant"]
    assert after_kill["started"].startswith("worker pid")


def test_a_worker_killed_mid_study_finishes_it_with_nothing_run_twice(grid_ws):
    ws = grid_ws[0]
    jobs = _jobs(ws)
    assert len(jobs) == 13 and {j.status for j in jobs} == {"done"}, [(j.id, j.status, j.error) for j in jobs]
    assert len({(j.kind, j.target) for j in jobs}) == 13
    for job in jobs:  # each job's process started once: one start line in its log
        assert (ws.root / job.log_path).read_text().count(f"# llmtui: job {job.id} ({job.kind}) started") == 1


def _holm(p_values):
    """Holm's step-down adjustment, written out from its definition."""
    m = len(p_values)
    ranked = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [None] * m
    best = 0.0
    for k, i in enumerate(ranked, start=1):
        best = max(best, min(1.0, (m - k + 1) * p_values[i]))
        adjusted[i] = best
    return adjusted


def test_show_json_has_every_cell_holm_adjusted_p_and_brute_force_pareto_flags(grid_ws):
    ws = grid_ws[0]
    table = _json(ws, "study", "show", "grid", "--json")
    assert table["correction"] == "holm"
    rows = {row["name"]: row for row in table["rows"]}
    trained = ["tiny-qwen3-boolq_SFT_LoRa16_NoQuant", "tiny-qwen3-boolq_SFT_DoRa16_NoQuant"]
    expected = {"tiny-qwen3": None}
    for name in trained:
        expected[name] = "tiny-qwen3"
        for tag in ("HQQ_w4_g64_headfp16", "HQQ_w8_g64_headfp16"):
            expected[name.replace("NoQuant", tag)] = name
    assert {name: row["parent"] for name, row in rows.items()} == expected
    cells = []
    for name, row in rows.items():
        assert row["status"] == "done" and row["size_bytes"] > 0
        assert set(row["cells"]) == {"boolq"}  # the quick set is BoolQ's test file: recorded as boolq
        cell = row["cells"]["boolq"]
        assert cell["metric"] == "accuracy" and 0.0 <= cell["value"] <= 1.0
        if row["parent"] is None:
            assert cell["delta"] is None and cell["p"] is None and cell["p_adjusted"] is None
        else:
            parent_value = rows[row["parent"]]["cells"]["boolq"]["value"]
            assert cell["delta"] == pytest.approx(cell["value"] - parent_value, abs=1e-9)
            assert 0.0 < cell["p"] <= 1.0
            cells.append(cell)
    assert len(cells) == 6
    for cell, adjusted in zip(cells, _holm([c["p"] for c in cells])):
        assert cell["p_adjusted"] == pytest.approx(adjusted, abs=1e-12)
    for flag, cost in (("pareto_size", "size_bytes"), ("pareto_latency", "latency_s")):
        for name, row in rows.items():
            score, price = row["cells"]["boolq"]["value"], row[cost]
            dominated = any(other["cells"]["boolq"]["value"] >= score and other[cost] <= price
                            and (other["cells"]["boolq"]["value"] > score or other[cost] < price)
                            for other in rows.values())
            assert row[flag] is (not dominated), (flag, name)
    assert any(row["pareto_size"] for row in rows.values())


def test_show_renders_markdown_latex_and_csv(grid_ws):
    ws = grid_ws[0]
    markdown = _llmtui(ws, "study", "show", "grid", "--markdown").stdout
    assert markdown.startswith("| model | status | boolq | size |") and markdown.count("tiny-qwen3") >= 7
    latex = _llmtui(ws, "study", "show", "grid", "--latex").stdout
    assert r"\begin{tabular}" in latex and r"\_HQQ\_w8" in latex
    csv_text = _llmtui(ws, "study", "show", "grid", "--csv").stdout
    assert csv_text.splitlines()[0].startswith("model,parent,reference,status,boolq__value,boolq__delta,boolq__p,")
    assert len(csv_text.splitlines()) == 8


@pytest.fixture(scope="module")
def search_ws(demo_template, tmp_path_factory):
    """The search run to completion: started by one ``study run``, moved on by the worker alone, the worker
    killed after two trials finished and started again (without ``study run``)."""
    ws = _workspace(demo_template, tmp_path_factory, "search", SEARCH)
    ensure_worker(ws, max_parallel=2)
    started = _json(ws, "study", "run", "search", "--json")
    storage = ws.state_dir / "studies" / "search.db"

    def trials(state=None):
        import optuna

        study = optuna.load_study(study_name="search", storage=f"sqlite:///{storage}")
        return [t for t in study.get_trials(deepcopy=False) if state is None or t.state.name == state]

    _wait(lambda: len(trials("COMPLETE")) >= 2, "two finished trials", ws)
    _kill_worker(ws)
    ensure_worker(ws, max_parallel=2)
    try:
        # a trial completes when its evaluation's metrics exist; its job is done once its process has exited
        # (stopping the worker between the two left the last job "running")
        _wait(lambda: len(trials("COMPLETE")) + len(trials("FAIL")) >= 6 and not trials("RUNNING")
              and all(job.status == "done" for job in _jobs(ws)), "six trials and their jobs done", ws)
    finally:
        stop_worker(ws)
    return ws, started, trials()


def test_a_search_finishes_its_trials_through_the_worker_and_records_each_value(search_ws):
    ws, started, trials = search_ws
    assert started["asked"] == [0, 1] and len(started["queued"]) == 5  # the base's eval + 2 × (train, eval)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6 and len(trials) == 6
    rates = [t.params["train.learning_rate"] for t in complete]
    assert all(1e-4 <= r <= 1e-2 for r in rates) and len(set(rates)) == 6
    table = _json(ws, "study", "show", "search", "--json")
    assert table["objective"] == "quick.accuracy"
    shown = {t["number"]: t for t in table["trials"]}
    rows = {row["name"]: row for row in table["rows"]}
    for trial in complete:
        name = trial.user_attrs["run"]
        assert name == f"tiny-qwen3-trial{trial.number}-boolq_SFT_LoRa16_NoQuant"
        assert shown[trial.number]["value"] == trial.value == rows[name]["cells"]["boolq"]["value"]
        metrics = json.loads(ws.metrics_file(name).read_text())
        assert metrics["model_name"] == name
    jobs = _jobs(ws)
    assert len({(j.kind, j.target) for j in jobs}) == len(jobs) == 13  # base eval + 6 × (train, eval)
    assert {j.status for j in jobs} == {"done"}
    again = _json(ws, "study", "run", "search", "--json", "--no-start")
    assert again["queued"] == [] and again["asked"] == []
