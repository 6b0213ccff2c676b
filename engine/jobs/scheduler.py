"""Which queued jobs may start now: a pure function of the queue, the running jobs and the free GPUs (worker process).

Rules: jobs start in id order once every dependency is ``done``; at most ``max_parallel`` run at once;
a job gets exactly the number of GPUs it asked for, never one that another running job holds. GPU jobs
keep their order: while the oldest one waits for GPUs, younger GPU jobs wait too (so a 2-GPU job is
not starved by a stream of 1-GPU jobs); jobs that need no GPU may still start in a free slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from engine.jobs.gpu import GpuReading
from engine.jobs.job_folder import RETRYABLE, JobStatus


@dataclass(frozen=True)
class Waiting:
    """A queued job as the scheduler sees it."""

    id: int
    gpus: int
    depends_on: tuple[int, ...] = ()


@dataclass(frozen=True)
class Start:
    job_id: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Impossible:
    """Why a queued job can never run; ``dependency`` is the job that ended badly, if that is why."""

    reason: str
    dependency: int | None = None


@dataclass
class Decision:
    """Jobs to start now (with their GPUs) and jobs that can never run."""

    starts: list[Start] = field(default_factory=list)
    impossible: dict[int, Impossible] = field(default_factory=dict)


def default_max_parallel(gpu_count: int) -> int:
    """One job per GPU; one job at a time on a CPU-only machine."""
    return max(gpu_count, 1)


def free_gpus(readings: Iterable[GpuReading], assigned: Iterable[int], busy_memory_fraction: float) -> list[int]:
    """GPU indexes no running job holds and whose memory is not taken by someone else."""
    taken = set(assigned)
    return sorted(r.index for r in readings
                  if r.index not in taken and r.memory_fraction <= busy_memory_fraction)


def plan_starts(waiting: Iterable[Waiting], *, running: int, free: Iterable[int], total_gpus: int,
                max_parallel: int, dependency_status: dict[int, str]) -> Decision:
    """Decide which of ``waiting`` start now.

    ``running`` is how many jobs run already; ``free`` the GPU indexes free now; ``total_gpus`` how
    many GPUs the machine has; ``dependency_status`` maps job ids to their status (an id missing
    from it was cleared from the queue after it finished, so it counts as satisfied).
    """
    decision = Decision()
    available = list(free)
    slots = max_parallel - running
    gpu_line_blocked = False
    for job in sorted(waiting, key=lambda j: j.id):
        states = [(dep, dependency_status.get(dep, JobStatus.DONE)) for dep in job.depends_on]
        dead = [(dep, state) for dep, state in states if state in RETRYABLE]
        if dead:
            dep, state = dead[0]
            decision.impossible[job.id] = Impossible(f"not run: dependency #{dep} {state}", dep)
            continue
        if job.gpus > total_gpus:
            seen = f"only {total_gpus} exist" if total_gpus else "NVML sees no GPU on this machine"
            decision.impossible[job.id] = Impossible(f"needs {job.gpus} GPU(s) but {seen}")
            continue
        if slots <= 0 or any(state != JobStatus.DONE for _, state in states):
            continue
        if job.gpus:
            if gpu_line_blocked:
                continue
            if len(available) < job.gpus:
                gpu_line_blocked = True
                continue
        chosen, available = tuple(available[:job.gpus]), available[job.gpus:]
        decision.starts.append(Start(job.id, chosen))
        slots -= 1
    return decision
