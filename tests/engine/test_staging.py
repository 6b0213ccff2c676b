"""The run staging layout (engine/staging.py) and the preset keys behind checkpoints and trackers."""

from __future__ import annotations

import pytest

from engine.presets.config import ConfigError, ExperimentConfig, config_from_dict
from engine.staging import (COMPLETE_MARKER, checkpoints, latest_checkpoint, mark_complete, other_runs, run_key,
                            staging_dir)


def test_run_key_ignores_settings_that_do_not_change_the_weights():
    base = ExperimentConfig()
    key = run_key(base.to_dict())
    assert len(key) == 12
    edited = ExperimentConfig()
    edited.train.save_steps, edited.train.save_total_limit, edited.train.resume = 7, 5, "never"
    edited.train.keep_checkpoints, edited.train.report_to = True, ["tensorboard"]
    edited.eval.limit, edited.eval.after = 10, True
    assert run_key(edited.to_dict()) == key, "checkpoint/tracker/eval settings keep the run resumable"
    edited.train.learning_rate = 3e-5
    assert run_key(edited.to_dict()) != key, "a different learning rate is another run"


def test_checkpoints_count_only_when_marked_complete(tmp_path):
    staging = staging_dir(tmp_path, "m", "0123456789ab")
    for step in (10, 20, 30):
        (staging / f"checkpoint-{step}").mkdir(parents=True)
    (staging / "checkpoint-x").mkdir()
    mark_complete(staging / "checkpoint-10")
    mark_complete(staging / "checkpoint-20")
    assert [(c.step, c.complete) for c in checkpoints(staging)] == [(10, True), (20, True), (30, False)]
    assert latest_checkpoint(staging).step == 20, "the half-written checkpoint-30 is ignored"
    assert (staging / "checkpoint-20" / COMPLETE_MARKER).is_file()
    assert latest_checkpoint(tmp_path / "missing") is None


def test_other_runs_of_the_same_name_only(tmp_path):
    mine = staging_dir(tmp_path, "m", "0123456789ab")
    other = staging_dir(tmp_path, "m", "ba9876543210")
    similar = staging_dir(tmp_path, "m-run-x", "ba9876543210")  # another model whose name extends this one
    for folder in (mine, other, similar):
        folder.mkdir()
    assert other_runs(tmp_path, "m", "0123456789ab") == [other]


def test_report_to_takes_a_name_or_a_list_and_checks_each():
    assert config_from_dict({"train": {"report_to": "tensorboard"}}).train.report_to == ["tensorboard"]
    assert config_from_dict({"train": {"report_to": ["wandb", "mlflow"]}}).train.report_to == ["wandb", "mlflow"]
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"train": {"report_to": ["tensorbord"], "resume": "always"},
                          "eval": {"report_to": ["none", "wandb"]}})
    text = str(caught.value)
    assert "train.report_to: 'tensorbord' is not one of" in text and "did you mean 'tensorboard'" in text
    assert "train.resume: 'always' is not one of auto, never" in text
    assert "eval.report_to: 'none' cannot be combined" in text
    defaults = ExperimentConfig().train
    assert (defaults.save_steps, defaults.save_total_limit, defaults.resume, defaults.keep_checkpoints,
            defaults.report_to) == (250, 2, "auto", False, [])
