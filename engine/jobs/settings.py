"""The worker's settings, ``.llmtui/worker.toml`` (its ``[slurm]`` table, vLLM's interpreter among them) (any process).

Read by the worker, the control front door (:mod:`engine.jobs.control`), the Slurm executor, ``llmtui doctor``
and the job process (evaluation's vLLM backend); every key is optional, and an error names the file and key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from engine.checked import number_problem, one_line, single_line_problem
from engine.presets.config import slurm_time_problem
from engine.workspace import Workspace

SETTINGS_FILE = "worker.toml"


class WorkerError(RuntimeError):
    """The worker could not be started, stopped or configured."""


@dataclass
class SlurmSettings:
    """The ``[slurm]`` table of ``.llmtui/worker.toml``: with ``enabled``, queued jobs go to Slurm."""

    enabled: bool = False
    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str = ""  # per-job limit; a training's [train] slurm_time overrides it
    cpus_per_task: int = 0  # 0 = the cluster's default
    mem: str = ""
    # {n} = GPUs per node; "" on a cluster without GPUs (jobs ask for none); "auto": --gpus-per-node={n} where
    # the partition's nodes have GPU resources (sinfo's %G), none where they have not
    gpu_flag: str = "auto"
    sbatch_args: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)  # shell lines run before the job's command
    signal_before_s: int = 300  # SIGUSR1 this long before the time limit: checkpoint and requeue (0 = none)
    max_parallel: int = 0  # at most this many elements of a job array (evaluations queued together) at once


@dataclass
class WorkerSettings:
    """``.llmtui/worker.toml``; every key is optional."""

    max_parallel: int = 0  # 0 = one job per GPU, one job at a time on a CPU-only machine
    busy_gpu_memory_fraction: float = 0.1  # a GPU with more memory in use by others counts as busy
    cancel_grace_s: float = 10.0  # SIGTERM, then SIGKILL after this long
    poll_interval_s: float = 0.2  # how often an idle worker looks at the queue
    vllm_python: str = ""  # vLLM's own interpreter, for evaluation's vLLM backend ("" = none)
    share_gpus: bool = False  # let a second job onto a GPU a running job holds when both estimates fit
    check_memory: bool = True  # hold a job whose memory estimate fits no GPU (or the CPU) until it does
    auto_resume: bool = True  # re-queue an interrupted training that left a checkpoint
    auto_resume_attempts: int = 3  # ... unless this many retries already led to it
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


def _slurm_settings(path: Path, table: object) -> SlurmSettings:
    if not isinstance(table, dict):
        raise WorkerError(f"{path}: [slurm] must be a table")
    known = {f.name: f for f in fields(SlurmSettings)}
    values: dict = {}
    for key, value in table.items():
        where = f"{path}: slurm.{key}"
        if key not in known:
            raise WorkerError(f"{path}: unknown key slurm.{key!r}; expected one of {', '.join(known)}")
        kind = known[key].type
        if kind == "bool" and not isinstance(value, bool):
            raise WorkerError(f"{where} = {value!r} must be true or false")
        if kind == "int" and (why := number_problem(value, integer=True, min=0)):
            raise WorkerError(f"{where} = {value!r} {why}")
        if kind == "str" and (why := single_line_problem(value)):  # it is written into a batch script
            raise WorkerError(one_line(f"{where} = {value!r} {why}"))
        if kind == "list[str]" and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise WorkerError(f"{where} = {value!r} must be a list of strings")
        values[key] = value
    settings = SlurmSettings(**values)
    if why := slurm_time_problem(settings.time):
        raise WorkerError(f"{path}: slurm.time = {why}")
    if settings.gpu_flag and settings.gpu_flag != "auto" and "{n}" not in settings.gpu_flag:
        raise WorkerError(f"{path}: slurm.gpu_flag = {settings.gpu_flag!r} must contain {{n}} (the GPU count), "
                          "e.g. \"--gpus-per-node={n}\" or \"--gres=gpu:{n}\"; \"\" on a cluster without GPUs; "
                          "\"auto\" to ask only where the partition has GPUs")
    if any(single_line_problem(line) for line in settings.setup):
        raise WorkerError(f"{path}: slurm.setup lines must not contain line breaks (one list item per line)")
    return settings


#: The environment variable naming vLLM's own interpreter (it wins over ``vllm_python`` in worker.toml).
VLLM_PYTHON_ENV = "LLMTUI_VLLM_PYTHON"
#: What every process says when no vLLM interpreter is named (evaluation, the smoke run, llmtui doctor).
VLLM_NOT_CONFIGURED = (f"vLLM is not configured: {VLLM_PYTHON_ENV} is not set and .llmtui/worker.toml names no "
                       "vllm_python (the interpreter ./dev.sh setup-vllm prints)")


def configured_vllm_python(ws: Workspace) -> str | None:
    """vLLM's interpreter: ``$LLMTUI_VLLM_PYTHON``, else ``vllm_python`` in ``.llmtui/worker.toml``, else None."""
    path = os.environ.get(VLLM_PYTHON_ENV, "").strip() or load_worker_settings(ws).vllm_python
    return path or None


def load_worker_settings(ws: Workspace) -> WorkerSettings:
    """Read ``.llmtui/worker.toml`` (defaults when absent); errors name the file and the key."""
    path = ws.state_dir / SETTINGS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return WorkerSettings()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise WorkerError(f"{path}: cannot be read: {exc}") from None
    known = {f.name: f for f in fields(WorkerSettings)}
    values = {}
    for key, value in data.items():
        if key not in known:
            raise WorkerError(f"{path}: unknown key {key!r}; expected one of {', '.join(known)}")
        if key == "slurm":
            values[key] = _slurm_settings(path, value)
            continue
        if known[key].type == "str":
            if why := single_line_problem(value):
                raise WorkerError(one_line(f"{path}: {key} = {value!r} {why} (a path)"))
            values[key] = value
            continue
        if known[key].type == "bool":
            if not isinstance(value, bool):
                raise WorkerError(f"{path}: {key} = {value!r} must be true or false")
            values[key] = value
            continue
        wanted = int if known[key].type == "int" else float
        limits = {"poll_interval_s": {"above": 0}, "busy_gpu_memory_fraction": {"min": 0, "max": 1}}.get(key, {"min": 0})
        if why := number_problem(value, integer=wanted is int, **limits):
            raise WorkerError(f"{path}: {key} = {value!r} {why}")
        values[key] = wanted(value)
    return WorkerSettings(**values)
