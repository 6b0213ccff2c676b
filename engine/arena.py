"""The Arena's headless part (any process; no torch): which test item a prompt comes from and what each model
recorded for it, one column's answer as its chat server reports it (time to first token, tokens/s, the task's
extracted answer, right or wrong, whether it reproduces the recorded prediction), and where each model's
server runs (the GPU the queue's scheduler would give a one-GPU job, or an equal share of the CPU cores).
Used by the TUI's Arena and by ``llmtui chat A B``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.data.prompts import build_messages
from engine.data.tasks import DatasetError, Item, TaskSpec, get_task, load_items
from engine.jobs.gpu import GpuReading
from engine.jobs.scheduler import Waiting, free_gpus, plan_starts
from engine.results.item_metrics import PredictionsError, jsonl_objects
from engine.results.scoring import extract_boxed, score_item
from engine.workspace import Workspace

#: How many models one Arena compares.
MIN_MODELS, MAX_MODELS = 2, 3


class ArenaError(ValueError):
    """An item reference, task or model list the Arena cannot use (the message names it)."""


def parse_item_ref(ref: str) -> tuple[str, int]:
    """``"boolq:42"`` → ``("boolq", 42)``."""
    task, sep, index = ref.partition(":")
    if not sep or not task or not index.strip().isdigit():
        raise ArenaError(f"--item {ref!r}: expected TASK:INDEX, such as boolq:42")
    return task.strip(), int(index)


@dataclass
class ArenaItem:
    """A test item as evaluation saw it, and each model's recorded prediction row for it (None where the
    model has no predictions file for the test set, or the file lacks the item)."""

    task: TaskSpec
    item: Item
    recorded: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.task.name}:{self.item.index}"

    @property
    def system(self) -> str:
        return build_messages(self.task, self.item)[0]["content"]

    @property
    def messages(self) -> list[dict[str, str]]:
        """The user turn evaluation sends (the chat server renders it with :attr:`system`, like
        :func:`engine.data.prompts.render_prompt`)."""
        return [build_messages(self.task, self.item)[1]]


def recorded_prediction(ws: Workspace, model: str, task: TaskSpec, index: int) -> dict[str, Any] | None:
    """``model``'s predictions row for item ``index`` of ``task``'s test set, or None (not evaluated, or a
    file that cannot be read: the Arena still answers, it just has nothing to compare with)."""
    path = ws.predictions_folder(model) / f"{Path(task.test_file).stem}.jsonl"
    if not path.is_file():
        return None
    try:
        return next((row for _, row, i in jsonl_objects(path, "index") if i == index), None)
    except PredictionsError:
        return None


def load_arena_item(ws: Workspace, ref: str, models: Iterable[str]) -> ArenaItem:
    """The test item ``ref`` (``TASK:INDEX``; the task by name or test file) and the models' recorded
    predictions for it."""
    task_name, index = parse_item_ref(ref)
    try:
        task = get_task(task_name, ws.datasets_dir)
        items = load_items(ws.datasets_dir, task, "test")
    except DatasetError as exc:
        raise ArenaError(f"--item {ref}: {exc}") from None
    if index >= len(items):
        raise ArenaError(f"--item {ref}: the {task.name} test set has {len(items)} items (0..{len(items) - 1})")
    return ArenaItem(task, items[index], {model: recorded_prediction(ws, model, task, index) for model in models})


# ------------------------------------------------------------------------------ one column


@dataclass
class ArenaColumn:
    """One model's side of the Arena, kept up to date from its chat server's replies (:meth:`apply`)."""

    model: str
    state: str = "loading"  # loading | ready | answering | done | failed
    kind: str = ""
    device: str = ""
    prompt: str = ""
    text: str = ""
    tokens: int | None = None
    seconds: float | None = None
    first_token_s: float | None = None
    stopped: bool = False
    error: str = ""

    def start_answer(self) -> None:
        self.state, self.prompt, self.text, self.error = "answering", "", "", ""
        self.tokens = self.seconds = self.first_token_s = None
        self.stopped = False

    def apply(self, reply: dict[str, Any]) -> None:
        """Take one reply of the protocol of :mod:`engine.runs.chat` (or the client's ``exited``)."""
        kind = reply.get("type")
        if kind == "ready":
            self.state, self.kind, self.device = "ready", str(reply.get("kind", "")), str(reply.get("device", ""))
        elif kind == "prompt":
            self.prompt = str(reply.get("text", ""))
        elif kind == "token" and self.state == "answering":
            self.text += str(reply.get("text", ""))
        elif kind == "done" and self.state == "answering":
            self.state, self.text = "done", str(reply.get("text", self.text))
            self.tokens, self.seconds = reply.get("tokens"), reply.get("seconds")
            self.first_token_s, self.stopped = reply.get("first_token_s"), bool(reply.get("stopped"))
        elif kind == "error":
            if reply.get("fatal"):
                self.state, self.error = "failed", f"did not load: {reply.get('message')}"
            elif self.state == "answering":
                self.state, self.error = "ready", str(reply.get("message"))
        elif kind == "exited":
            tail = str(reply.get("stderr", "")).strip().splitlines()[-3:]
            self.state = "failed"
            self.error = self.error or (f"the model server exited (code {reply.get('code')})"
                                        + (f": {' / '.join(tail)}" if tail else ""))

    @property
    def finished(self) -> bool:
        """Nothing more will come for the current answer (done, failed, or an error ended it)."""
        return self.state in ("done", "failed") or (self.state == "ready" and bool(self.error))

    @property
    def tokens_per_s(self) -> float | None:
        if not self.tokens or not self.seconds:
            return None
        return round(self.tokens / self.seconds, 2)

    def outcome(self, task: TaskSpec | None, item: ArenaItem | None, greedy: bool) -> "ColumnOutcome":
        """What the answer means: its extracted answer (with a task), right or wrong and the recorded
        prediction (with an item)."""
        task = item.task if item is not None else task
        extracted = extract_boxed(self.text) if task is not None and self.state == "done" else None
        correct = None
        recorded = item.recorded.get(self.model) if item is not None else None
        if item is not None and self.state == "done":
            correct = score_item(item.task.kind, self.text, item.item.answer).correct
        reproduces = None
        if recorded is not None and self.state == "done" and greedy and not self.stopped:
            reproduces = self.text.strip() == str(recorded.get("output", "")).strip()
        return ColumnOutcome(extracted, correct, recorded, reproduces)


@dataclass(frozen=True)
class ColumnOutcome:
    extracted: str | None
    correct: bool | None  # None: not from a test item, or no answer
    recorded: dict[str, Any] | None  # the recorded predictions row
    reproduces_recorded: bool | None  # None: nothing recorded, not greedy, or no answer


def column_json(column: ArenaColumn, outcome: ColumnOutcome, with_item: bool) -> dict[str, Any]:
    """The headless twin's object for one model (``llmtui chat A B --json``)."""
    data: dict[str, Any] = {"model": column.model, "text": column.text, "first_token_s": column.first_token_s,
                            "tokens_per_s": column.tokens_per_s, "tokens": column.tokens,
                            "extracted": outcome.extracted}
    if column.error:
        data["error"] = column.error
    if with_item:
        data["correct"] = outcome.correct
        data["recorded"] = outcome.recorded.get("output") if outcome.recorded is not None else None
        data["reproduces_recorded"] = outcome.reproduces_recorded
    return data


# ------------------------------------------------------------------------------ where each server runs


@dataclass(frozen=True)
class Placement:
    """Where one chat server runs: its ``--device``, its torch threads (CPU) and its environment."""

    device: str
    threads: int | None = None
    env: dict[str, str] = field(default_factory=dict)


def placements(count: int, readings: list[GpuReading], held: Iterable[int], busy_memory_fraction: float,
               cpu_cores: int) -> list[Placement]:
    """``count`` servers: on a GPU box each on the GPU the queue's scheduler would give a one-GPU job now
    (GPUs that running jobs hold or others fill are skipped; more servers than free GPUs share them, and
    with none free they share all); on the CPU each gets an equal share of the cores."""
    if readings:
        decision = plan_starts([Waiting(i + 1, 1) for i in range(count)], running=0,
                               free=free_gpus(readings, held, busy_memory_fraction), total_gpus=len(readings),
                               max_parallel=count, dependency_status={})
        given = [start.gpus[0] for start in decision.starts] or [r.index for r in readings]
        return [Placement("cuda", None, {"CUDA_VISIBLE_DEVICES": str(given[i % len(given)]),
                                         "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) for i in range(count)]
    return [Placement("cpu", max(1, cpu_cores // count)) for _ in range(count)]


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def held_gpus(ws: Workspace) -> list[int]:
    """The GPUs the workspace's running jobs hold (none when there is no queue)."""
    import sqlite3

    from engine.jobs.store import JobStore

    if not ws.queue_db.exists():
        return []
    try:
        with JobStore(ws) as store:
            return [gpu for job in store.list(statuses=["running"]) for gpu in job.gpus_assigned]
    except sqlite3.Error:
        return []


def workspace_placements(ws: Workspace, count: int, inventory: Any) -> list[Placement]:
    """:func:`placements` for this workspace: the inventory's GPUs (a :class:`engine.jobs.gpu.GpuInventory`),
    its running jobs' GPUs, the worker's busy threshold, this machine's cores."""
    from engine.jobs.settings import WorkerError, WorkerSettings, load_worker_settings

    try:
        busy = load_worker_settings(ws).busy_gpu_memory_fraction
    except WorkerError:  # a broken worker.toml is the worker's to report; the Arena uses the default
        busy = WorkerSettings().busy_gpu_memory_fraction
    return placements(count, inventory.gpus(), held_gpus(ws), busy, cpu_cores())
