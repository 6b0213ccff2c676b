"""A training run's staging folder in use (job process): its lock, resume from the newest complete checkpoint,
checkpoints marked complete, the trackers a resumed attempt continues, and the rename to the model folder.
The folder layout itself is :mod:`engine.staging`'s."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from engine.files import promote_dir, write_json
from engine.presets.config import ExperimentConfig
from engine.runs.data_parallel import rank
from engine.runs.train_errors import TrainError
from engine.staging import (CHECKPOINT_PREFIX, TENSORBOARD_DIR, checkpoints, latest_checkpoint, mark_complete,
                            other_runs, remove_checkpoints, run_key, staging_dir)
from engine.workspace import Workspace

#: Held (flock) by the process training in a staging folder: a second process training the same run is refused.
RUN_LOCK = ".llmtui-lock"
#: The tracker runs the first attempt opened, so a resumed attempt continues them.
TRACKERS_FILE = ".llmtui-trackers.json"
log = logging.getLogger("llmtui.train")


@contextlib.contextmanager
def run_staging(ws: Workspace, config: ExperimentConfig):
    """Yield ``(staging folder, checkpoint to resume from or None)`` for this run, holding its lock (rank 0).

    Rank 0 first removes the staging folders of earlier runs of the same model name with other settings
    (unless a live process holds them), checkpoints half-written by a process that died mid-save, and
    with ``train.resume = "never"`` this run's checkpoints. On failure the folder is kept when it holds
    a complete checkpoint (the next attempt resumes from it) and removed otherwise.
    """
    name = config.output_name()
    key = run_key(config.to_dict())
    folder = staging_dir(ws.models_dir, name, key)
    if rank() != 0:  # rank 0 prepares the folder; the other ranks only read it
        latest = latest_checkpoint(folder) if config.train.resume == "auto" else None
        yield folder, latest
        return
    for old in other_runs(ws.models_dir, name, key):
        with _lock(old, wait=False) as held:
            if held:
                shutil.rmtree(old, ignore_errors=True)
                log.warning("removed %s: an unfinished run of %s with other settings (its checkpoints cannot be "
                            "resumed by this one)", old.name, name)
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder, wait=False) as held:
        if not held:
            raise TrainError(f"another process is training this run in {folder}; wait for it to end or cancel it")
        found = checkpoints(folder)
        half = [c for c in found if not c.complete]
        if half:
            log.warning("ignored checkpoint(s) at step %s in %s: half-written (the process died while saving)",
                        ", ".join(map(str, remove_checkpoints(half))), folder)
        latest = latest_checkpoint(folder)
        if latest is not None and config.train.resume == "never":
            steps = remove_checkpoints(c for c in found if c.complete)
            log.warning("train.resume = 'never': removed this run's checkpoint(s) at step %s and started over",
                        ", ".join(map(str, steps)))
            latest = None
        if latest is not None:
            log.warning("resuming %s from its checkpoint at step %d (%s)", name, latest.step, latest.path)
        try:
            yield folder, latest
        except BaseException:
            kept = latest_checkpoint(folder)
            if kept is None:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                log.warning("kept the checkpoint at step %d in %s: the next attempt of this run resumes from it",
                            kept.step, folder)
            raise


@contextlib.contextmanager
def _lock(folder: Path, *, wait: bool):
    """Hold ``folder``'s run lock; yields False when another process holds it and ``wait`` is False."""
    try:
        fd = os.open(folder / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # removed meanwhile
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def checkpoint_callback(save_steps: int) -> Any:
    """A ``TrainerCallback`` that marks each checkpoint complete once the trainer's save returned, and skips
    the trainer's extra save at the last step (the final model is written right after it, and that save's
    optimizer state, its largest part, would only be deleted again)."""
    from transformers import TrainerCallback

    class Checkpoints(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save and state.global_step >= state.max_steps and save_steps and \
                    state.global_step % save_steps:
                control.should_save = False

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                mark_complete(Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}")

    return Checkpoints()


def read_trackers(staging: Path) -> dict[str, Any]:
    try:
        data = json.loads((staging / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_trackers(staging: Path, found: dict[str, Any]) -> None:
    write_json(staging / TRACKERS_FILE, {**read_trackers(staging), **found})


def clear_for_final_save(staging: Path) -> None:
    """Remove whatever an attempt that died while saving the final model left (checkpoints, TensorBoard logs
    and llmtui's own files stay)."""
    keep = {TENSORBOARD_DIR, RUN_LOCK, TRACKERS_FILE}
    for entry in staging.iterdir():
        if entry.name in keep or entry.name.startswith(CHECKPOINT_PREFIX):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def promote_run(staging: Path, final: Path, *, overwrite: bool, keep_checkpoints: bool) -> None:
    """Rename the finished staging folder to the model folder, then delete its checkpoints (unless kept)."""
    if final.exists() and not overwrite:
        raise TrainError(f"{final} appeared while this run trained; the trained model stays in {staging} "
                         "(rename it, or train again with --overwrite)")
    (staging / TRACKERS_FILE).unlink(missing_ok=True)
    (staging / RUN_LOCK).unlink(missing_ok=True)
    promote_dir(staging, final)
    if not keep_checkpoints:
        remove_checkpoints(checkpoints(final))
