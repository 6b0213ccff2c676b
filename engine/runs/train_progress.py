"""Live training progress: the events written for the TUI and the ticks shown on the console (job process).

:class:`ProgressEvents` writes ``start``/``train_step``/``eval``/``saved``/``error``/``done`` events
(one flushed JSONL line each, through :class:`engine.events.EventWriter`) and hands every event to
an optional ``reporter`` callable; the reporter also gets console-only ``progress`` ticks after each
optimizer step (never written to the file). :func:`progress_callback` adapts it to a transformers
``TrainerCallback``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from engine.events import EventKind, EventWriter
from engine.runs.device import current_gpu_memory_gb

Reporter = Callable[[dict[str, Any]], None]
#: Keys of the trainer's log dict copied into ``train_step`` events under the contract's names.
LOG_KEYS = {"loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}


class ProgressEvents:
    """Emit events to a file and a console reporter; a disabled sink (non-zero ranks) does nothing."""

    def __init__(self, writer: EventWriter, reporter: Reporter | None = None, *, enabled: bool = True):
        self.writer = writer
        self.reporter = reporter
        self.enabled = enabled
        self._last_tokens: float | None = None
        self._last_time: float | None = None
        self.last_loss: float | None = None

    def emit(self, kind: str, **data: Any) -> dict[str, Any] | None:
        """Write one event (flushed) and show it on the console."""
        if not self.enabled:
            return None
        event = self.writer.emit(kind, **data)
        if self.reporter is not None:
            self.reporter(event)
        return event

    def tick(self, step: int, max_steps: int) -> None:
        """A console-only progress tick after an optimizer step."""
        if self.enabled and self.reporter is not None:
            self.reporter({"t": time.time(), "kind": EventKind.PROGRESS, "step": step, "max_steps": max_steps})

    def train_step(self, step: int, max_steps: int, epoch: float | None, logs: dict[str, Any],
                   now: float | None = None) -> dict[str, Any] | None:
        """A ``train_step`` event from one trainer log; ``tokens_per_s`` from TRL's cumulative ``num_tokens``."""
        now = time.time() if now is None else now
        tokens = logs.get("num_tokens")
        tokens_per_s = None
        if tokens is not None:
            if self._last_tokens is not None and self._last_time is not None and now > self._last_time:
                tokens_per_s = round((tokens - self._last_tokens) / (now - self._last_time), 1)
            self._last_tokens, self._last_time = float(tokens), now
        data = {key: _coerce_float(logs.get(source)) for key, source in LOG_KEYS.items()}
        if data["loss"] is not None:
            self.last_loss = data["loss"]
        return self.emit(EventKind.TRAIN_STEP, step=step, max_steps=max_steps,
                         epoch=None if epoch is None else round(float(epoch), 4), **data,
                         tokens_per_s=tokens_per_s, gpu_mem_gb=current_gpu_memory_gb())

    def start_clock(self, now: float | None = None) -> None:
        """Start the tokens/s clock at the beginning of training."""
        self._last_tokens, self._last_time = 0.0, time.time() if now is None else now


def _coerce_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def progress_callback(events: ProgressEvents) -> Any:
    """A transformers ``TrainerCallback`` that turns trainer logs into :class:`ProgressEvents` calls."""
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            events.start_clock()

        def on_step_end(self, args, state, control, **kwargs):
            events.tick(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                events.train_step(state.global_step, state.max_steps, state.epoch, logs)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            values = {k: _coerce_float(v) for k, v in (metrics or {}).items()}
            events.emit(EventKind.EVAL, step=state.global_step, max_steps=state.max_steps, **values)

    return EventsCallback()


def stop_callback() -> Any:
    """A ``TrainerCallback`` that ends training at the end of a step once this process got the stop signal
    (:mod:`engine.jobs.requeue`), asking the trainer to save a checkpoint first. Data-parallel ranks agree
    (one all-reduce of a flag per step), so they all stop after the same step.

    A signal that arrives during the last step does not stop the run: training is over, and the final save
    (the model alone) is shorter than a checkpoint. Stopped there, the next attempt resumed from a checkpoint
    at ``max_steps`` and the trainer took one step past it ("step 3/2", 0.6B bench).
    """
    from transformers import TrainerCallback

    from engine.jobs.requeue import stop_requested

    class StopCallback(TrainerCallback):
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            flag = stop_requested()
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                import torch

                device = "cuda" if dist.get_backend() == "nccl" else "cpu"
                tensor = torch.tensor([1.0 if flag else 0.0], device=device)
                dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
                flag = bool(tensor.item())
            if flag and state.global_step < state.max_steps:
                self.stopped = True
                control.should_save = True
                control.should_training_stop = True

    return StopCallback()


class AlreadyTrained(Exception):
    """Raised before a step when the run resumed from a checkpoint at ``max_steps``: nothing is left to train."""


def max_steps_guard() -> Any:
    """A ``TrainerCallback`` that ends ``trainer.train`` before a step past ``max_steps`` (:class:`AlreadyTrained`).

    The trainer checks ``max_steps`` only after a step: resumed from a checkpoint at ``max_steps`` (a run killed
    while saving its model), it skipped the epoch's trained batches and took one more step ("step 3/2") whenever
    ``max_steps`` did not end an epoch. By then it has loaded the checkpoint's weights, which are the model.
    """
    from transformers import TrainerCallback

    class MaxStepsGuard(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.max_steps > 0 and state.global_step >= state.max_steps:
                raise AlreadyTrained(f"resumed at step {state.global_step} of {state.max_steps}")

    return MaxStepsGuard()
