"""A job's progress, ETA and training curve, folded from its :mod:`engine.events` file (TUI and CLI processes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.events import EventKind

#: Event kind → the stage it reports progress for.
PROGRESS_KINDS = {EventKind.TRAIN_STEP: "train", EventKind.EVAL_PROGRESS: "eval",
                  EventKind.QUANTIZE_PROGRESS: "quantize"}
#: How many points the curve keeps (older ones are dropped).
MAX_CURVE_POINTS = 1000
#: Training numbers kept from the latest ``train_step`` event.
TRAIN_READINGS = ("loss", "learning_rate", "grad_norm", "tokens_per_s", "gpu_mem_gb", "epoch")


def _json_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class TrainingCurve:
    """What a training chart plots: train loss and learning rate per logged step, eval loss at its steps."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    learning_rates: list[float | None] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)

    def add_train(self, step: int, loss: float, learning_rate: float | None) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.learning_rates.append(learning_rate)
        for points in (self.steps, self.losses, self.learning_rates):
            del points[:-MAX_CURVE_POINTS]

    def add_eval(self, step: int, loss: float) -> None:
        self.eval_steps.append(step)
        self.eval_losses.append(loss)
        for points in (self.eval_steps, self.eval_losses):
            del points[:-MAX_CURVE_POINTS]

    def copy(self) -> "TrainingCurve":
        return TrainingCurve(list(self.steps), list(self.losses), list(self.learning_rates),
                             list(self.eval_steps), list(self.eval_losses))


@dataclass
class JobProgress:
    """Everything the Jobs screen shows about a job besides its log; feed events with :meth:`update`."""

    stage: str = ""  # "train" | "eval" | "quantize" | "" before the first progress event
    label: str = ""  # what is progressing: "train", "eval boolq", "quantize calibrate"…
    done: int = 0
    total: int = 0
    started_at: float | None = None  # the ``start`` event's time
    resumed_from_step: int | None = None  # a training that continued from its checkpoint at this step
    curve: TrainingCurve = field(default_factory=TrainingCurve)
    latest: dict[str, float] = field(default_factory=dict)  # loss, learning_rate, tokens_per_s, …
    error: str = ""
    finished: bool = False
    _stage_start: tuple[float, int] | None = field(default=None, repr=False)  # (t, done) when the label began
    _last: tuple[float, int] | None = field(default=None, repr=False)

    def update(self, events: Iterable[dict[str, Any]]) -> None:
        """Fold new events in (in file order)."""
        for event in events:
            kind = event.get("kind")
            t = _json_number(event.get("t"))
            if kind == EventKind.START:
                self.started_at = t
                step = _json_number(event.get("resumed_from_step"))
                self.resumed_from_step = int(step) if step is not None else None
            elif kind in PROGRESS_KINDS:
                self._progress(PROGRESS_KINDS[kind], event, t)
            elif kind == EventKind.EVAL:
                step, loss = _json_number(event.get("step")), _json_number(event.get("eval_loss"))
                if step is not None and loss is not None:
                    self.curve.add_eval(int(step), loss)
            elif kind == EventKind.ERROR:
                self.error = str(event.get("message", "error"))
            elif kind == EventKind.DONE:
                self.finished = True

    def _progress(self, stage: str, event: dict[str, Any], t: float | None) -> None:
        if stage == "train":
            done, total, label = event.get("step"), event.get("max_steps"), "train"
            for key in TRAIN_READINGS:
                value = _json_number(event.get(key))
                if value is not None:
                    self.latest[key] = value
            loss, step = _json_number(event.get("loss")), _json_number(done)
            if loss is not None:
                self.curve.add_train(int(step or 0), loss, _json_number(event.get("learning_rate")))
        else:
            done, total = event.get("done"), event.get("total")
            part = event.get("dataset") if stage == "eval" else event.get("stage")
            label = f"{stage} {part}" if part else stage
        done = int(_json_number(done) or 0)
        total = int(_json_number(total) or 0)
        if label != self.label or self._stage_start is None or done < self.done:
            # training counts from the job's start (step 0, or the checkpoint it resumed from); other stages
            # from their first report
            if stage == "train" and self.started_at is not None:
                self._stage_start = (self.started_at, self.resumed_from_step or 0)
            else:
                self._stage_start = (t, done) if t is not None else None
        self.stage, self.label, self.done, self.total = stage, label, done, total
        if t is not None:
            self._last = (t, done)

    @property
    def losses(self) -> list[float]:
        """The train losses of the curve, oldest first."""
        return self.curve.losses

    @property
    def fraction(self) -> float | None:
        """Done / total of the current stage, or None when the total is unknown."""
        return min(self.done / self.total, 1.0) if self.total > 0 else None

    def rate(self) -> float | None:
        """Items (steps) per second in the current stage so far."""
        if self._stage_start is None or self._last is None:
            return None
        (t0, d0), (t1, d1) = self._stage_start, self._last
        if t1 <= t0 or d1 <= d0:
            return None
        return (d1 - d0) / (t1 - t0)

    def eta_s(self, now: float) -> float | None:
        """Seconds left in the current stage at time ``now`` (None while the rate is unknown)."""
        rate = self.rate()
        if rate is None or self.total <= 0 or self._last is None:
            return None
        return max((self.total - self.done) / rate - max(now - self._last[0], 0.0), 0.0)
