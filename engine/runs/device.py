"""Where training runs and what it cost: device and dtype choice, GPU memory peaks, peak RSS, and freed host
memory given back to the system (job process).

Everything torch-related is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from typing import Any

GB = 1024**3
#: glibc's ``M_MMAP_THRESHOLD``: blocks from this size up get a mapping of their own, unmapped when freed.
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


class HardwareError(RuntimeError):
    """The requested device or dtype cannot be used on this machine (the message says why)."""


@dataclass(frozen=True)
class DeviceChoice:
    """The device training runs on and how weights and arithmetic are typed.

    ``weights_dtype`` is the dtype the model is loaded in; ``mixed`` is ``"bf16"``, ``"fp16"`` or
    ``""`` (no autocast); ``compute_dtype`` is bitsandbytes' 4-bit compute dtype for QLoRA.
    """

    device: str  # "cuda" | "cpu"
    weights_dtype: str  # "float32" | "bfloat16" | "float16"
    mixed: str
    compute_dtype: str
    description: str

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"


def bf16_supported() -> bool:
    """True when the current CUDA device computes in bf16 natively (compute capability 8.0 or newer).

    ``torch.cuda.is_bf16_supported()`` also says True where bf16 is only emulated (a T4, a V100), which
    is slow; llmtui trains and computes in bf16 only where it is native.
    """
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def choose_device(requested_dtype: str = "auto", *, full_finetuning: bool = True) -> DeviceChoice:
    """CUDA when available (bf16 where supported), else the CPU in float32.

    ``requested_dtype`` is the preset's ``model.dtype``. Full fine-tuning with float16 weights cannot
    be trained (the optimizer would step fp16 master weights), so it is refused with a clear message.
    """
    import torch

    if torch.cuda.is_available():
        bf16_ok = bf16_supported()
        name = torch.cuda.get_device_name(torch.cuda.current_device())
        if requested_dtype == "auto":
            dtype, mixed = ("bfloat16", "bf16") if bf16_ok else ("float32", "fp16")
        elif requested_dtype == "bfloat16":
            if not bf16_ok:
                raise HardwareError(f"model.dtype = 'bfloat16' but {name} does not support bf16; "
                                    "use float16 or float32")
            dtype, mixed = "bfloat16", "bf16"
        elif requested_dtype == "float16":
            if full_finetuning:
                raise HardwareError("model.dtype = 'float16' cannot be used for full fine-tuning "
                                    "(peft.method = NoPeft): use bfloat16 or float32, or a PEFT method")
            dtype, mixed = "float16", "fp16"
        else:
            dtype, mixed = "float32", ""
        return DeviceChoice("cuda", dtype, mixed, "bfloat16" if bf16_ok else "float16", f"cuda ({name})")
    dtype = "float32" if requested_dtype in ("auto", "float16") else requested_dtype
    return DeviceChoice("cpu", dtype, "bf16" if dtype == "bfloat16" else "", "float32", "cpu")


def torch_dtype(name: str) -> Any:
    """``"bfloat16"`` → ``torch.bfloat16``."""
    import torch

    return getattr(torch, name)


def reset_memory_peaks() -> None:
    """Start a fresh peak measurement: GPU memory on every visible device, and on Linux the RSS high-water mark."""
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(index)
    try:
        with open("/proc/self/clear_refs", "w") as handle:  # "5" resets VmHWM (Linux >= 4.0)
            handle.write("5")
    except OSError:
        pass


def return_freed_host_memory() -> bool:
    """Make freed host blocks of :data:`MMAP_THRESHOLD_BYTES` or more go back to the system at once, and give
    back what was freed so far (glibc only; True when it applied).

    glibc maps big blocks on their own, but its threshold for doing so rises to the largest block freed (up to
    32 MiB), so after the first training step the activations and loss chunks a CPU run frees stay in its
    heap, where fragmentation keeps them resident: ~150 MB of a ~2 GB peak in ``bench/train_throughput.py``.
    Fixing the threshold (which also stops it rising) costs a page fault per new block, which is small
    beside the matmuls that fill it.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    malloc_trim(0)
    return applied


def current_gpu_memory_gb() -> float | None:
    """GPU memory allocated by this process on its current device, in GB (None on the CPU)."""
    if "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.memory_allocated() / GB, 3)


def local_gpu_peaks() -> list[dict[str, Any]]:
    """Peak allocated/reserved GB of each CUDA device this process used (empty on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return []
    peaks = []
    for index in range(torch.cuda.device_count()):
        allocated = torch.cuda.max_memory_allocated(index)
        reserved = torch.cuda.max_memory_reserved(index)
        if allocated or reserved:
            peaks.append({"index": index, "name": torch.cuda.get_device_name(index),
                          "peak_allocated_gb": round(allocated / GB, 3), "peak_reserved_gb": round(reserved / GB, 3)})
    return peaks


def peak_rss_gb() -> float:
    """This process's peak resident memory in GB since :func:`reset_memory_peaks` (Linux) or since it started."""
    from engine.jobs.peak import high_water_mark

    high = high_water_mark(os.getpid())
    if high:
        return round(high / GB, 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / GB if sys.platform == "darwin" else peak * 1024 / GB, 3)


def gather_across_ranks(value: Any) -> list[Any]:
    """``value`` from every data-parallel rank (a one-item list when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def hardware_info(choice: DeviceChoice) -> dict[str, Any]:
    """The ``hardware_info`` section of ``training_metadata.json``; call it on every rank.

    Per-GPU peaks and peak RSS are collected from all ranks (each rank has its own GPU).
    """
    local = {"gpus": local_gpu_peaks(), "rss": peak_rss_gb(), "rank": int(os.environ.get("RANK", "0"))}
    ranks = gather_across_ranks(local)
    per_gpu = []
    for entry in ranks:
        for gpu in entry["gpus"]:
            per_gpu.append({**gpu, "rank": entry["rank"]})
    overall = {key: round(sum(g[key] for g in per_gpu), 3) if per_gpu else None  # None: no GPU was used
               for key in ("peak_allocated_gb", "peak_reserved_gb")}
    return {"device": choice.description, "dtype": choice.weights_dtype, "mixed_precision": choice.mixed or "no",
            "world_size": len(ranks), "vram_peaks": {"overall": overall, "per_gpu": per_gpu},
            "peak_rss_gb": max(entry["rss"] for entry in ranks),
            "peak_rss_gb_per_rank": [entry["rss"] for entry in ranks]}
