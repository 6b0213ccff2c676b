"""``llmtui data prepare`` (CLI process): download the four benchmarks from the Hugging Face Hub and reduce them.

For users with network access. Each benchmark is mapped into llmtui's schema (``question``,
``answer`` and, for context tasks, ``context``) and written as the task registry's ``train-``/``test-``
Parquet files in the workspace's ``Datasets/``. Without network the error says so. It lives in
``engine.runs`` because it imports Hugging Face ``datasets``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.data.tasks import BUILTIN_TASKS


class PrepareError(RuntimeError):
    """A benchmark could not be downloaded or converted (the message says which and why)."""


def _openmath(row: dict[str, Any]) -> dict[str, Any] | None:
    try:
        answer = float(str(row["expected_answer"]).replace(",", ""))
    except ValueError:
        return None  # the legacy scripts kept numeric answers only
    return {"question": row["problem"], "answer": answer}


def _arc(row: dict[str, Any]) -> dict[str, Any] | None:
    options = " ".join(f"{label}. {text}" for label, text in zip(row["choices"]["label"], row["choices"]["text"]))
    return {"question": f"{row['question']} {options}", "answer": str(row["answerKey"])}


def _boolq(row: dict[str, Any]) -> dict[str, Any]:
    return {"question": row["question"], "answer": bool(row["answer"]), "context": row["passage"]}


def _squad(row: dict[str, Any]) -> dict[str, Any]:
    texts = row["answers"]["text"]
    return {"question": row["question"], "answer": texts[0] if texts else "", "context": row["context"]}


@dataclass(frozen=True)
class Source:
    task: str  # the name in engine.data.tasks.BUILTIN_TASKS (which owns the file names)
    hub_id: str
    config: str | None
    train_split: str
    test_split: str
    convert: Callable[[dict[str, Any]], dict[str, Any] | None]


SOURCES = {
    "openmath": Source("openmath", "nvidia/OpenMathInstruct-2", None, "train_1M", "train_1M", _openmath),
    "arc": Source("arc", "allenai/ai2_arc", "ARC-Challenge", "train", "test", _arc),
    "boolq": Source("boolq", "google/boolq", None, "train", "validation", _boolq),
    "squad": Source("squad", "rajpurkar/squad_v2", None, "train", "validation", _squad),
}


def check_hub_reachable(timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message when the Hub's host cannot be reached (instead of slow retries)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise PrepareError("HF_HUB_OFFLINE=1 is set: downloading the benchmarks needs the Hugging Face Hub")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        raise PrepareError(f"cannot reach {host} ({exc}): this machine is offline. Downloading the benchmarks "
                           "needs network access; on an offline machine put train-/test- Parquet files with "
                           "columns question, answer[, context] in Datasets/ yourself.") from None


def _rows(source: Source, split: str, n: int, seed: int, skip: int = 0) -> list[dict[str, Any]]:
    from datasets import load_dataset

    try:
        data = load_dataset(source.hub_id, source.config, split=split, streaming=True)
    except Exception as exc:  # the hub client raises many types when offline
        raise PrepareError(f"cannot download {source.hub_id} ({split}): {type(exc).__name__}: {exc}. "
                           "This needs network access to the Hugging Face Hub; on an offline machine put "
                           f"{BUILTIN_TASKS[source.task].train_file} / {BUILTIN_TASKS[source.task].test_file} "
                           "in Datasets/ yourself "
                           "(columns question, answer[, context]).") from None
    rows: list[dict[str, Any]] = []
    for i, row in enumerate(data.shuffle(seed=seed, buffer_size=10_000)):
        if i < skip:
            continue
        converted = source.convert(row)
        if converted is not None:
            rows.append(converted)
        if len(rows) >= n:
            break
    return rows


def prepare_benchmarks(datasets_dir: Path, names: list[str], train_rows: int = 1000, test_rows: int = 200,
                       seed: int = 0) -> list[Path]:
    """Download, reduce and write the named benchmarks; return the written files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise PrepareError(f"unknown benchmark {', '.join(unknown)}; expected {', '.join(SOURCES)}")
    check_hub_reachable()
    written = []
    for name in names:
        source = SOURCES[name]
        same_split = source.train_split == source.test_split
        test = _rows(source, source.test_split, test_rows, seed)
        train = _rows(source, source.train_split, train_rows, seed, skip=test_rows * 2 if same_split else 0)
        for split, rows in (("train", train), ("test", test)):
            task = BUILTIN_TASKS[source.task]
            path = Path(datasets_dir) / (task.train_file if split == "train" else task.test_file)
            tmp = path.with_name(f".{path.name}.{random.randrange(1 << 30)}.tmp")
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            tmp.replace(path)
            written.append(path)
    return written
