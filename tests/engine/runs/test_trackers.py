"""Experiment trackers: TensorBoard event files read back with TensorBoard's own reader, MLflow through a local
file store (``mlflow.search_runs``), W&B offline when installed; missing packages fail before training."""

from __future__ import annotations

import importlib.util

import pytest

from engine.presets.config import load_preset
from engine.runs.evaluate import EvalOptions, evaluate_model
from engine.runs.train import preflight, train
from engine.runs.train_errors import TrainError

SHORT = ["train.max_steps=6", "train.logging_steps=2", "train.per_device_train_batch_size=4", "data.trunc_train=32",
         "train.save_steps=3"]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_missing_tracker_package_fails_before_training(demo_ws):
    if importlib.util.find_spec("trackio") is not None:
        pytest.skip("trackio is installed here; this test needs a tracker whose package is missing")
    config = load_preset(demo_ws.experiments_dir / "boolq-full.toml", ["train.report_to=['tensorboard', 'trackio']"])
    with pytest.raises(TrainError) as caught:
        preflight(demo_ws, config)
    message = str(caught.value)
    assert "train.report_to" in message and "trackio" in message and "pip install trackio" in message
    assert "tensorboard" not in message.split("(")[1], "only the missing one is named"


def test_tensorboard_logs_land_in_the_model_folder_and_evaluation_joins_them(demo_ws):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_preset(demo_ws.experiments_dir / "boolq-full.toml", [*SHORT, "train.report_to='tensorboard'"])
    result = train(demo_ws, config)
    runs = result.output_dir / "runs"
    [train_run] = [p for p in runs.iterdir() if p.is_dir()]
    reader = EventAccumulator(str(train_run))
    reader.Reload()
    assert [event.step for event in reader.Scalars("train/loss")] == [2, 4, 6], "one point per logging step"
    assert result.metadata["trackers"] == {"tensorboard": {"log_dir": "runs"}}
    assert not list(demo_ws.models_dir.glob(".tmp-*")), "the logs moved with the model out of the staging folder"

    evaluate_model(demo_ws, result.model_name, EvalOptions(datasets=["boolq"], limit=4, report_to=["tensorboard"]))
    reader = EventAccumulator(str(runs / "eval"))
    reader.Reload()
    [point] = reader.Scalars("eval/overall_accuracy")
    assert point.step == 6 and 0.0 <= point.value <= 1.0
    assert "eval/test-boolq/accuracy" in reader.Tags()["scalars"]


def test_mlflow_run_in_a_local_store_gets_training_params_and_evaluation_metrics(demo_ws, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database; skinny has no SQL stack
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "llmtui-test")
    config = load_preset(demo_ws.experiments_dir / "boolq-full.toml", [*SHORT, "train.report_to=['mlflow']"])
    result = train(demo_ws, config)
    run_id = result.metadata["trackers"]["mlflow"]["run_id"]
    evaluate_model(demo_ws, result.model_name, EvalOptions(datasets=["boolq"], limit=4, report_to=["mlflow"]))

    mlflow.set_tracking_uri(store.as_uri())
    runs = mlflow.search_runs(experiment_names=["llmtui-test"])
    assert list(runs["run_id"]) == [run_id]
    row = runs.iloc[0]
    assert row["params.learning_rate"] == "0.002" and row["params.max_steps"] == "6"
    assert row["tags.mlflow.runName"] == result.model_name
    assert 0.0 <= row["metrics.eval_overall_accuracy"] <= 1.0
    history = mlflow.tracking.MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [2, 4, 6]


def test_wandb_offline_run(demo_ws, tmp_path, monkeypatch):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed in this environment (a W&B run cannot be checked here)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    config = load_preset(demo_ws.experiments_dir / "boolq-full.toml", [*SHORT, "train.report_to=['wandb']"])
    import wandb

    try:
        result = train(demo_ws, config)
    finally:
        wandb.teardown()  # end W&B's background service now, not in an atexit hook after pytest closed its pipes
    identity = result.metadata["trackers"]["wandb"]
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{identity['id']}")), "the offline run folder"
