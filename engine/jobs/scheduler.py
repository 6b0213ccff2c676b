"""Which queued jobs may start now: a pure function of the queue, the running jobs and the free GPUs (worker process).

Rules: jobs start in id order once every dependency is ``done``; at most ``max_parallel`` run at once;
a job gets exactly the number of GPUs it asked for, never one that another running job holds. GPU jobs
keep their order: while the oldest one waits for GPUs, younger GPU jobs wait too (so a 2-GPU job is
not starved by a stream of 1-GPU jobs); jobs that need no GPU may still start in a free slot.

Memory: a job whose estimate (``Waiting.memory``, bytes on each of its GPUs, or on the CPU for a job without
GPUs; see ``engine.jobs.fit``) fits no allowed GPU's free memory stays queued with the reason ("needs ~18.2 GB,
largest free 11.5 GB on GPU 1"); with sharing on, a GPU one running job holds is offered to a second job that
fits in what is left. A CPU job larger than the machine's available memory is refused when nothing of ours
runs (nothing would free memory for it) and waits otherwise.
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
    memory: float | None = None  # bytes the job's estimate needs on each GPU (on the CPU without GPUs)


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
    waiting: dict[int, str] = field(default_factory=dict)  # why a job that could start by the rules waits


def default_max_parallel(gpu_count: int) -> int:
    """One job per GPU; one job at a time on a CPU-only machine."""
    return max(gpu_count, 1)


def free_gpus(readings: Iterable[GpuReading], assigned: Iterable[int], busy_memory_fraction: float) -> list[int]:
    """GPU indexes no running job holds and whose memory is not taken by someone else."""
    taken = set(assigned)
    return sorted(r.index for r in readings
                  if r.index not in taken and r.memory_fraction <= busy_memory_fraction)


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


def memory_reason(need: float, free_memory: dict[int, int], candidates: Iterable[int]) -> str:
    """``needs ~18.2 GB, largest free 11.5 GB on GPU 1`` (or that no allowed GPU is free)."""
    offered = [g for g in candidates if g in free_memory]
    if not offered:
        return f"needs ~{_gb(need)}, no allowed GPU is free"
    largest = max(offered, key=lambda g: free_memory[g])
    return f"needs ~{_gb(need)}, largest free {_gb(free_memory[largest])} on GPU {largest}"


def plan_starts(waiting: Iterable[Waiting], *, running: int, free: Iterable[int], total_gpus: int,
                max_parallel: int, dependency_status: dict[int, str], gpu_free_memory: dict[int, int] | None = None,
                shareable: Iterable[int] = (), cpu_available: float | None = None) -> Decision:
    """Decide which of ``waiting`` start now.

    ``running`` is how many jobs run already; ``free`` the GPU indexes free now; ``total_gpus`` how
    many GPUs the machine has; ``dependency_status`` maps job ids to their status (an id missing
    from it was cleared from the queue after it finished, so it counts as satisfied).
    ``gpu_free_memory`` maps GPU indexes to their free bytes (None: memory is not checked); ``shareable``
    the GPUs a running job holds that a second job may share; ``cpu_available`` the machine's available
    memory in bytes (None: not checked).
    """
    decision = Decision()
    available = list(free)
    shared = [g for g in shareable if g not in available]
    room = dict(gpu_free_memory or {})
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
            if job.memory is not None and gpu_free_memory is not None:
                fitting = [g for g in available + shared if room.get(g, 0) >= job.memory]
                if len(fitting) < job.gpus:
                    decision.waiting[job.id] = memory_reason(job.memory, room, available + shared)
                    gpu_line_blocked = True
                    continue
                chosen = tuple(sorted(fitting[:job.gpus]))
                for g in chosen:
                    room[g] -= int(job.memory)
                available = [g for g in available if g not in chosen]
                shared = [g for g in shared if g not in chosen]
                decision.starts.append(Start(job.id, chosen))
                slots -= 1
                continue
            if len(available) < job.gpus:
                gpu_line_blocked = True
                continue
        elif job.memory is not None and cpu_available is not None:
            if job.memory > cpu_available:
                reason = f"needs ~{_gb(job.memory)}, the machine has {_gb(cpu_available)} available"
                if running == 0 and not decision.starts:  # nothing of ours would free memory for it
                    decision.impossible[job.id] = Impossible(f"refused: {reason}")
                else:
                    decision.waiting[job.id] = reason
                continue
            cpu_available -= job.memory
        chosen, available = tuple(available[:job.gpus]), available[job.gpus:]
        decision.starts.append(Start(job.id, chosen))
        slots -= 1
    return decision
