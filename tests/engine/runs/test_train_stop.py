"""The stop signal's callback (:func:`engine.runs.train_progress.stop_callback`) with the trainer's real state
objects: a stop asked before the last step ends the run with a checkpoint; one asked during the last step lets
the run finish (stopped there, the resumed attempt trained one step past ``max_steps``: 0.6B bench, "step 3/2")."""

from __future__ import annotations

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from engine.jobs import requeue
from engine.runs.train_progress import stop_callback


@pytest.fixture
def stop_asked():
    requeue.request_stop()
    yield
    requeue._stop.clear()  # the flag is process-wide; the other tests run without a stop request


def _step_end(step: int, max_steps: int, tmp_path):
    callback = stop_callback()
    control = TrainerControl()
    callback.on_step_end(TrainingArguments(output_dir=str(tmp_path), report_to=[]),
                         TrainerState(global_step=step, max_steps=max_steps), control)
    return callback, control


def test_a_stop_before_the_last_step_saves_and_ends_the_run(stop_asked, tmp_path):
    callback, control = _step_end(1, 2, tmp_path)
    assert callback.stopped and control.should_save and control.should_training_stop


def test_a_stop_during_the_last_step_lets_the_run_finish(stop_asked, tmp_path):
    callback, control = _step_end(2, 2, tmp_path)
    assert not callback.stopped and not control.should_save and not control.should_training_stop


def test_no_stop_without_the_signal(tmp_path):
    callback, control = _step_end(1, 2, tmp_path)
    assert not callback.stopped and not control.should_training_stop
