"""The task registry (built-in benchmarks and custom datasets) and tolerant Parquet loading (any process).

Built-in tasks keep the legacy scripts' file names: ``train-``/``test-`` + ``OpenMathInstruct-2``,
``ai2_arc``, ``boolq``, ``squad_v2`` ``.parquet`` in the workspace's ``Datasets/``. A custom dataset
is a pair of Parquet files with ``question``, ``answer`` (and ``context``) declared in
``Datasets/datasets.toml``::

    [mytask]
    kind = "boolq"            # math_numeric | mcq4 | boolq | squad_v2
    file_stem = "mytask"      # optional: train-mytask.parquet / test-mytask.parquet
    system_prompt = "..."     # optional: the kind's built-in prompt otherwise
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.kinds import TABLE_METRICS, TASK_KINDS

CUSTOM_REGISTRY_FILE = "datasets.toml"

SYSTEM_PROMPTS = {
    "math_numeric": "You are a careful math solver. Solve the problem and give only the final numeric "
                    "answer inside \\boxed{}.",
    "mcq4": "Answer the multiple-choice question with the letter of the correct option (A, B, C or D) "
            "inside \\boxed{}.",
    "boolq": "Read the passage and answer the question with True or False inside \\boxed{}.",
    "squad_v2": "Answer the question with a short span copied from the context, inside \\boxed{}. If the "
                "context does not contain the answer, write \\boxed{unanswerable}.",
}
#: Per-kind ceiling on generated tokens (the legacy scripts used 1000 everywhere; generation also stops at
#: the first closed ``\boxed{}``).
MAX_NEW_TOKENS = {"math_numeric": 1024, "mcq4": 256, "boolq": 256, "squad_v2": 256}


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or lacks a required column (the message names it)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: its preset name, files, kind, whether items carry a context, and its system prompt."""

    name: str
    file_stem: str
    kind: str
    has_context: bool
    system_prompt: str
    max_new_tokens: int
    builtin: bool = True
    title: str = ""  # the short name tables show ("math" for openmath); the task name when empty

    @property
    def display_title(self) -> str:
        return self.title or self.name

    @property
    def train_file(self) -> str:
        return f"train-{self.file_stem}.parquet"

    @property
    def test_file(self) -> str:
        return f"test-{self.file_stem}.parquet"

    @property
    def required_columns(self) -> tuple[str, ...]:
        return ("question", "answer", "context") if self.has_context else ("question", "answer")


def _builtin(name: str, stem: str, kind: str, has_context: bool, title: str = "") -> TaskSpec:
    return TaskSpec(name, stem, kind, has_context, SYSTEM_PROMPTS[kind], MAX_NEW_TOKENS[kind], title=title)


#: THE built-in task list: every other fact about the built-in tasks (names, test-file names, kinds,
#: titles, table columns) is derived from it.
BUILTIN_TASKS: dict[str, TaskSpec] = {
    "openmath": _builtin("openmath", "OpenMathInstruct-2", "math_numeric", False, title="math"),
    "squad": _builtin("squad", "squad_v2", "squad_v2", True),
    "arc": _builtin("arc", "ai2_arc", "mcq4", False),
    "boolq": _builtin("boolq", "boolq", "boolq", True),
}
#: The order tables show the built-in tasks in.
DISPLAY_ORDER = ("arc", "boolq", "squad", "openmath")


def builtin_tasks_for_display() -> list[TaskSpec]:
    """The built-in tasks in :data:`DISPLAY_ORDER`."""
    return [BUILTIN_TASKS[name] for name in DISPLAY_ORDER]


def builtin_metric_columns() -> list[str]:
    """Result-table column keys (``{file stem}__{metric}``) of the built-in tasks' table metrics, in order."""
    return [f"{task.file_stem}__{metric}" for task in builtin_tasks_for_display() for metric in TABLE_METRICS[task.kind]]


@dataclass(frozen=True)
class Item:
    """One dataset row: its position in the file, question, gold answer (raw type) and context."""

    index: int
    question: str
    answer: Any
    context: str | None = None


def custom_tasks(datasets_dir: Path) -> dict[str, TaskSpec]:
    """Custom tasks declared in ``Datasets/datasets.toml`` (empty when the file is absent)."""
    path = Path(datasets_dir) / CUSTOM_REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as TOML: {exc}") from None
    tasks = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise DatasetError(f"{path}: [{name}] must be a table")
        kind = entry.get("kind")
        if kind not in TASK_KINDS:
            raise DatasetError(f"{path}: {name}.kind = {kind!r}; expected one of {', '.join(TASK_KINDS)}")
        if name in BUILTIN_TASKS or name == "none":
            raise DatasetError(f"{path}: [{name}] clashes with a built-in dataset name")
        stem = str(entry.get("file_stem", name))
        if "/" in stem or "\\" in stem or stem.startswith("."):
            raise DatasetError(f"{path}: {name}.file_stem = {stem!r} must be a plain file stem")
        tasks[name] = TaskSpec(name, stem, kind, bool(entry.get("has_context", kind in ("boolq", "squad_v2"))),
                               str(entry.get("system_prompt", SYSTEM_PROMPTS[kind])),
                               int(entry.get("max_new_tokens", MAX_NEW_TOKENS[kind])), builtin=False)
    return tasks


def task_registry(datasets_dir: Path | None = None) -> dict[str, TaskSpec]:
    """Built-in tasks plus the workspace's custom ones."""
    tasks = dict(BUILTIN_TASKS)
    if datasets_dir is not None:
        tasks.update(custom_tasks(datasets_dir))
    return tasks


def get_task(name: str, datasets_dir: Path | None = None) -> TaskSpec:
    """The task called ``name`` (preset name like ``boolq`` or test file like ``test-boolq.parquet``)."""
    tasks = task_registry(datasets_dir)
    if name in tasks:
        return tasks[name]
    for task in tasks.values():
        if name in (task.test_file, task.train_file, task.file_stem, f"test-{task.file_stem}"):
            return task
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(tasks)}")


def load_items(datasets_dir: Path, task: TaskSpec, split: str, limit: int = 0) -> list[Item]:
    """Rows of ``{split}-{stem}.parquet`` as :class:`Item`s; extra columns are ignored.

    Raises :class:`DatasetError` naming the file (missing, unreadable) or the missing column.
    """
    import pyarrow.parquet as pq

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    path = Path(datasets_dir) / (task.train_file if split == "train" else task.test_file)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (the {task.name} {split} set)")
    try:
        schema_names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from None
    missing = [c for c in task.required_columns if c not in schema_names]
    if missing:
        raise DatasetError(f"{path}: missing column {', '.join(repr(c) for c in missing)} "
                           f"(a {task.kind} dataset needs {', '.join(task.required_columns)})")
    table = pq.read_table(path, columns=list(task.required_columns))
    if limit:
        table = table.slice(0, limit)
    columns = table.to_pydict()
    contexts = columns.get("context") or [None] * table.num_rows
    return [Item(i, "" if q is None else str(q), a, None if c is None else str(c))
            for i, (q, a, c) in enumerate(zip(columns["question"], columns["answer"], contexts))]
