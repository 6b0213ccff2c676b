"""Plain tests for the TUI's engine helpers: the incremental model index, job progress from events, and
the workspace change stamps."""

from __future__ import annotations

import shutil

import pytest

import engine.models.index as model_index
from engine.files import write_json
from engine.jobs.progress import JobProgress
from engine.jobs.store import JobStore
from engine.models.scan import scan_models
from tui.workspace_watch import changed_parts, workspace_stamps
from tui_workspace import make_model, make_workspace


@pytest.fixture
def counted_inspections(monkeypatch):
    """Count the folders the index reads (a spy around the real inspect_model)."""
    names: list[str] = []
    real = model_index.inspect_model

    def spy(ws, path, metrics_names=None):
        names.append(path.name)
        return real(ws, path, metrics_names)

    monkeypatch.setattr(model_index, "inspect_model", spy)
    return names


def test_index_matches_a_full_scan_and_rereads_only_what_changed(tmp_path, counted_inspections):
    ws = make_workspace(tmp_path / "ws")
    for name in ("a-model", "b-model", "c-model"):
        make_model(ws, name)
    (ws.models_dir / "d-broken").mkdir()
    index = model_index.ModelIndex(ws)
    assert index.refresh() == {"a-model", "b-model", "c-model", "d-broken"}
    assert [r.to_dict() for r in index.records()] == [r.to_dict() for r in scan_models(ws)]

    counted_inspections.clear()
    assert index.refresh() == set() and counted_inspections == []  # nothing changed: nothing read

    write_json(ws.metrics_file("b-model"), {"datasets": {"test-boolq.parquet": {"type": "boolq", "accuracy": 0.5}}})
    assert index.refresh() == {"b-model"} and counted_inspections == ["b-model"]
    assert index.get("b-model").status == "tested"

    counted_inspections.clear()
    shutil.copytree(ws.model_dir("a-model"), ws.models_dir / "e-model")
    shutil.rmtree(ws.model_dir("c-model"))
    assert index.refresh() == {"c-model", "e-model"} and counted_inspections == ["e-model"]
    assert [r.to_dict() for r in index.records()] == [r.to_dict() for r in scan_models(ws)]

    counted_inspections.clear()
    assert len(index.refresh(force=True)) == 4 and len(counted_inspections) == 4


def test_a_saved_index_starts_the_next_session_and_only_changes_are_read(tmp_path, counted_inspections):
    ws = make_workspace(tmp_path / "ws")
    for name in ("a-model", "b-model"):
        make_model(ws, name)
    assert model_index.ModelIndex.load(ws).records() == []  # nothing saved yet
    first = model_index.ModelIndex(ws)
    first.refresh()
    first.save()
    assert not list(ws.state_dir.glob("*.tmp*"))  # written through a temp name, renamed

    counted_inspections.clear()
    again = model_index.ModelIndex.load(ws)
    assert [r.to_dict() for r in again.records()] == [r.to_dict() for r in first.records()]
    assert counted_inspections == []  # shown without reading a folder
    make_model(ws, "c-model")
    assert again.refresh() == {"c-model"} and counted_inspections == ["c-model"]

    model_index.index_path(ws).write_text('{"format": 1, "records": [')  # cut short: a full scan instead
    broken = model_index.ModelIndex.load(ws)
    assert broken.records() == [] and broken.refresh() == {"a-model", "b-model", "c-model"}


def test_job_progress_rate_eta_and_loss_curve():
    progress = JobProgress()
    progress.update([{"t": 100.0, "kind": "start"}])
    progress.update([{"t": 110.0 + i, "kind": "train_step", "step": 10 * (i + 1), "max_steps": 100,
                      "loss": 2.0 - i * 0.5, "learning_rate": 1e-3, "tokens_per_s": 900.0} for i in range(2)])
    assert (progress.label, progress.done, progress.total) == ("train", 20, 100)
    assert progress.fraction == pytest.approx(0.2)
    assert progress.rate() == pytest.approx(20 / 11)  # steps since the start event
    assert progress.eta_s(111.0) == pytest.approx(80 / (20 / 11))
    assert progress.eta_s(115.0) == pytest.approx(80 / (20 / 11) - 4)
    assert progress.losses == [2.0, 1.5] and progress.latest["tokens_per_s"] == 900.0
    progress.update([{"t": 112.0, "kind": "eval", "step": 20, "max_steps": 100, "eval_loss": 1.75}])
    curve = progress.curve
    assert (curve.steps, curve.learning_rates, curve.eval_steps, curve.eval_losses) == ([10, 20], [1e-3, 1e-3],
                                                                                        [20], [1.75])

    progress.update([{"t": 200.0, "kind": "eval_progress", "dataset": "boolq", "done": 10, "total": 50},
                     {"t": 205.0, "kind": "eval_progress", "dataset": "boolq", "done": 20, "total": 50}])
    assert progress.label == "eval boolq" and progress.rate() == pytest.approx(2.0)
    assert progress.eta_s(205.0) == pytest.approx(15.0)
    progress.update([{"t": 206.0, "kind": "eval_progress", "dataset": "arc", "done": 0, "total": 40}])
    assert progress.label == "eval arc" and progress.eta_s(206.0) is None  # no rate yet for a new set
    progress.update([{"t": 207.0, "kind": "error", "message": "CUDA out of memory"}, {"kind": "done"}])
    assert progress.error == "CUDA out of memory" and progress.finished
    # malformed events are tolerated: non-numbers count as 0/unknown, nothing is appended to the curve
    progress.update([{"kind": "train_step", "step": "x", "loss": None}, {"t": "later", "kind": "quantize_progress"}])
    assert (progress.stage, progress.label, progress.done, progress.total) == ("quantize", "quantize", 0, 0)
    assert progress.fraction is None and progress.rate() is None and progress.eta_s(300.0) is None
    assert progress.losses == [2.0, 1.5] and progress.latest["tokens_per_s"] == 900.0
    assert progress.error == "CUDA out of memory" and progress.finished


def test_workspace_stamps_change_with_models_metrics_queue_and_presets(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    before = workspace_stamps(ws)
    assert changed_parts(before, workspace_stamps(ws)) == frozenset()
    make_model(ws, "new-model")
    after_model = workspace_stamps(ws)
    assert changed_parts(before, after_model) == {"models"}
    write_json(ws.metrics_file("new-model"), {})
    after_metrics = workspace_stamps(ws)
    assert changed_parts(after_model, after_metrics) == {"metrics"}
    with JobStore(ws) as store:
        store.enqueue("eval", ["true"], target="new-model")
    after_queue = workspace_stamps(ws)
    assert changed_parts(after_metrics, after_queue) == {"queue"}
    with JobStore(ws) as store:
        store.request_cancel(1)
    assert changed_parts(after_queue, workspace_stamps(ws)) == {"queue"}
    (ws.experiments_dir / "x.toml").write_text("")
    assert "experiments" in changed_parts(after_queue, workspace_stamps(ws))


def test_a_resumed_training_counts_its_rate_from_the_checkpoint():
    progress = JobProgress()
    progress.update([{"t": 100.0, "kind": "start", "resumed_from_step": 250},
                     {"t": 110.0, "kind": "train_step", "step": 260, "max_steps": 300, "loss": 1.0}])
    assert progress.resumed_from_step == 250
    assert progress.rate() == pytest.approx(1.0), "10 steps in 10 s, not 260"
    assert progress.eta_s(110.0) == pytest.approx(40.0)
