"""A training run's staging folder and its checkpoints (the one owner of that layout); any process.

A training run works in ``Models/.tmp-{output name}-run-{key}/`` (the model scan skips ``.tmp-`` folders,
so it never looks like a finished model). ``key`` is a hash of the settings that shape the trained
weights, so the next attempt of the same run (same preset snapshot, same output name) finds the folder
again after a crash, and a changed preset never resumes someone else's optimizer state. Inside it the
trainer writes ``checkpoint-{step}/`` folders and TensorBoard logs (``runs/``); a checkpoint counts only
once llmtui has marked it complete after the trainer finished writing it, so one half-written by a
process that died mid-save is ignored. At the end the model files are written into the same folder,
which is renamed to ``Models/{output name}``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

#: transformers' checkpoint folder prefix (``transformers.trainer_utils.PREFIX_CHECKPOINT_DIR``).
CHECKPOINT_PREFIX = "checkpoint-"
#: Written into a checkpoint folder after the trainer's save returned: the folder is complete.
COMPLETE_MARKER = ".llmtui-complete"
#: TensorBoard's folder inside the run (transformers' default ``{output_dir}/runs/``).
TENSORBOARD_DIR = "runs"
#: Preset keys that do not change the trained weights: editing them keeps the run resumable.
NOT_IN_RUN_KEY = {"eval": None, "ptq": None,
                  "train": ("save_steps", "save_total_limit", "resume", "keep_checkpoints", "report_to",
                            "slurm_time")}
_KEY_LENGTH = 12


@dataclass(frozen=True)
class Checkpoint:
    """One ``checkpoint-{step}`` folder of a run."""

    step: int
    path: Path
    complete: bool


def run_key(preset: dict[str, Any]) -> str:
    """The run's identity: a hash of the resolved preset (``ExperimentConfig.to_dict()``) without the keys
    that do not change the trained weights."""
    kept = {}
    for section, values in preset.items():
        dropped = NOT_IN_RUN_KEY.get(section, ())
        if dropped is None:
            continue
        kept[section] = {k: v for k, v in values.items() if k not in dropped} if isinstance(values, dict) else values
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_LENGTH]


def staging_dir(models_dir: Path, output_name: str, key: str) -> Path:
    """The staging folder of run ``key`` writing ``Models/{output_name}``."""
    return Path(models_dir) / f".tmp-{output_name}-run-{key}"


def other_runs(models_dir: Path, output_name: str, key: str) -> list[Path]:
    """Staging folders of earlier runs with other settings that write the same model name."""
    pattern = re.compile(rf"\.tmp-{re.escape(output_name)}-run-[0-9a-f]{{{_KEY_LENGTH}}}")
    try:
        entries = list(Path(models_dir).iterdir())
    except FileNotFoundError:
        return []
    return sorted(p for p in entries if pattern.fullmatch(p.name) and p.name != staging_dir(models_dir, output_name,
                                                                                             key).name)


def checkpoints(folder: Path) -> list[Checkpoint]:
    """The ``checkpoint-{step}`` folders in ``folder`` (a run's staging folder or a finished model), by step."""
    found = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        suffix = entry.name[len(CHECKPOINT_PREFIX):]
        if entry.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and entry.is_dir():
            found.append(Checkpoint(int(suffix), entry, (entry / COMPLETE_MARKER).is_file()))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest complete checkpoint in ``folder`` (None when there is none)."""
    complete = [c for c in checkpoints(folder) if c.complete]
    return complete[-1] if complete else None


def mark_complete(checkpoint_folder: Path) -> None:
    """Record that the trainer finished writing ``checkpoint_folder`` (called after its save returned)."""
    (Path(checkpoint_folder) / COMPLETE_MARKER).write_text("complete\n")


def remove_checkpoints(items: Iterable[Checkpoint]) -> list[int]:
    """Delete checkpoint folders; returns their steps."""
    steps = []
    for checkpoint in items:
        shutil.rmtree(checkpoint.path, ignore_errors=True)
        steps.append(checkpoint.step)
    return steps
