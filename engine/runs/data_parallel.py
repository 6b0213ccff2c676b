"""Data-parallel training (job process): this process's rank, and the relaunch of a command as N ranks
under ``accelerate launch`` (``train.gpus > 1``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from engine.runs.train_errors import TrainError


def rank() -> int:
    """This process's data-parallel rank (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def in_data_parallel_child() -> bool:
    """True inside a process started by ``accelerate launch``/``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_parallel_command(module_args: list[str], num_processes: int) -> list[str]:
    """``accelerate launch --multi_gpu`` running ``python -m MODULE ARGS`` in ``num_processes`` ranks."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", *module_args]


def launch_data_parallel(module_args: list[str], num_processes: int) -> int:
    """Re-run ``python -m MODULE ARGS`` as ``num_processes`` data-parallel ranks; returns the exit code.

    One rank per CUDA device; without CUDA the ranks run on the CPU (gloo), which
    ``accelerate launch --multi_gpu`` does with ``ACCELERATE_USE_CPU=1`` (``--cpu --num_processes N``
    silently starts one process).
    """
    from engine.jobs.gpu import visible_gpu_count

    gpus = visible_gpu_count()
    env = dict(os.environ)
    if gpus == 0:
        env["ACCELERATE_USE_CPU"] = "1"
    elif gpus < num_processes:
        raise TrainError(f"train.gpus = {num_processes} but only {gpus} CUDA device(s) are visible; lower "
                         "train.gpus or set CUDA_VISIBLE_DEVICES")
    from engine.jobs.requeue import STOP_SIGNAL

    # The launcher would die of the stop signal; it ignores it, and each rank installs its own handler.
    return subprocess.call(data_parallel_command(module_args, num_processes), env=env,
                           preexec_fn=lambda: signal.signal(STOP_SIGNAL, signal.SIG_IGN))
