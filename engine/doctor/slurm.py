"""The doctor's Slurm check (CLI process): with ``[slurm] enabled``, do the partition's GPUs match what jobs ask for."""

from __future__ import annotations

from engine.doctor.check import ERROR, OK, Check
from engine.doctor.facts import Facts


def check_slurm(facts: Facts) -> list[Check]:
    """With ``[slurm] enabled``: whether the partition's GPUs (``sinfo -o %G``) match what jobs will ask for."""
    from engine.jobs.settings import WorkerError, load_worker_settings
    from engine.jobs.slurm import GPU_FLAG_AUTO, SlurmError, partition_gres

    try:
        settings = load_worker_settings(facts.ws).slurm
    except WorkerError:
        return []  # check_jobs reports the broken settings
    if not settings.enabled:
        return []
    try:
        partition, gres = partition_gres(settings)
    except SlurmError as exc:
        return [Check("slurm gpus", ERROR, str(exc),
                      "check SLURM_CONF, the Slurm client commands and [slurm] partition")]
    if "gpu" in gres:
        return [Check("slurm gpus", OK, f"partition {partition}: {gres}")]
    if settings.gpu_flag and settings.gpu_flag != GPU_FLAG_AUTO:
        return [Check("slurm gpus", ERROR, f"partition {partition} has no GPUs (sinfo %G: {gres or 'none'}) but "
                      f"gpu_flag = {settings.gpu_flag!r} asks for them: sbatch would refuse every job",
                      'set gpu_flag = "" (or "auto") under [slurm] in .llmtui/worker.toml')]
    return [Check("slurm gpus", OK, f"partition {partition} has no GPUs; jobs ask for none and run on CPUs")]
