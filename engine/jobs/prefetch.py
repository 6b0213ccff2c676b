"""Fetching what a Slurm job needs from the Hugging Face hub when it is queued (CLI / TUI process).

Compute nodes usually have no network, so batch jobs run with the hub offline
(:data:`engine.jobs.slurm.OFFLINE_ENV`). A training whose ``model.base`` is a hub id therefore gets
that model into the Hugging Face cache (which must be on a filesystem the nodes share, like the
workspace) here, on the machine that queues it; where that cannot be done the queue says so now,
not an hour later on a node.
"""

from __future__ import annotations

from engine.jobs.store import JobError
from engine.presets.config import ExperimentConfig
from engine.models.resolve import resolve_model_ref
from engine.workspace import Workspace


def fetch_for_cluster(ws: Workspace, config: ExperimentConfig) -> None:
    """Make sure the model a training starts from is on disk before it goes to Slurm. Raises
    :class:`JobError` naming the model and why it cannot be fetched."""
    ref = config.model.base
    if resolve_model_ref(ws, ref) != ref:
        return  # a local folder
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(ref, local_files_only=True)
        return  # cached already
    except Exception:  # not (completely) in the cache: fetch it
        pass
    try:
        snapshot_download(ref, etag_timeout=15)
    except Exception as exc:
        raise JobError(f"model.base = {ref!r} is not in the Hugging Face cache and cannot be fetched from this "
                       f"machine ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); Slurm jobs "
                       "run with the hub offline, so fetch it here first (huggingface-cli download "
                       f"{ref}) or point model.base at a local folder") from None
