"""Calibration text for GPTQ and AWQ: training items through the shared prompt builder, or a text file (job process).

A dataset's items are rendered with :func:`engine.data.prompts.render_example` (prompt followed by its
completion, exactly what training saw), ``samples`` of them drawn with a fixed seed. A text file gives
one sample per line (blank lines skipped, the first ``samples`` lines used). The SHA-256 of the texts
joined by newlines identifies the calibration set in ``quantization_metadata.json``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.tasks import DatasetError, get_task, load_items, task_registry
from engine.data.prompts import render_example
from engine.workspace import Workspace

CALIBRATION_SEED = 0


class CalibrationError(ValueError):
    """No usable calibration text; the message names the file or dataset."""


@dataclass(frozen=True)
class Calibration:
    """The calibration texts and where they came from (a dataset name or a file path)."""

    source: str
    texts: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.texts).encode("utf-8")).hexdigest()

    def metadata(self) -> dict[str, Any]:
        """``{source, samples, sha256}`` for ``quantization_metadata.json``."""
        return {"source": self.source, "samples": len(self.texts), "sha256": self.sha256}


def calibration_from_file(path: Path | str, samples: int) -> Calibration:
    """The first ``samples`` non-blank lines of a UTF-8 text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"{path}: calibration file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read the calibration file ({exc.strerror or exc})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise CalibrationError(f"{path}: the calibration file has no text (one sample per line)")
    return Calibration(str(path), tuple(lines[:samples]))


def calibration_from_dataset(datasets_dir: Path, dataset: str, tokenizer: Any, samples: int,
                             seed: int = CALIBRATION_SEED) -> Calibration:
    """``samples`` training items of ``dataset`` (drawn with ``seed``) rendered as prompt + completion."""
    try:
        task = get_task(dataset, datasets_dir)
        items = load_items(datasets_dir, task, "train")
    except DatasetError as exc:
        raise CalibrationError(f"calibration dataset: {exc}") from None
    if not items:
        raise CalibrationError(f"{datasets_dir / task.train_file}: no rows to calibrate with")
    chosen = random.Random(seed).sample(items, min(samples, len(items)))
    texts = []
    for item in chosen:
        example = render_example(tokenizer, task, item)
        texts.append(example["prompt"] + example["completion"])
    return Calibration(task.name, tuple(texts))


def load_calibration(ws: Workspace, choice: str | None, *, tokenizer: Any, default_dataset: str | None,
                     samples: int, seed: int = CALIBRATION_SEED) -> Calibration:
    """Calibration from ``choice``: a text file (as given, or relative to the workspace), a dataset name,
    or — when empty — ``default_dataset`` (the source model's training dataset)."""
    if samples < 1:
        raise CalibrationError(f"calibration samples must be at least 1, not {samples}")
    choice = (choice or "").strip()
    if not choice:
        if not default_dataset or default_dataset == "none":
            raise CalibrationError("the source model has no training dataset in its training_metadata.json to "
                                   "calibrate with; pass --calibration DATASET or a text file (one sample per line)")
        return calibration_from_dataset(ws.datasets_dir, default_dataset, tokenizer, samples, seed)
    for path in (Path(choice).expanduser(), ws.root / choice):
        if path.is_file():
            return calibration_from_file(path, samples)
    try:
        task = get_task(choice, ws.datasets_dir)
    except DatasetError:
        known = ", ".join(task_registry(ws.datasets_dir))
        raise CalibrationError(f"calibration {choice!r} is neither a file nor a dataset (datasets: {known})") from None
    return calibration_from_dataset(ws.datasets_dir, task.name, tokenizer, samples, seed)
