"""Peak memory of the current process: CUDA allocated/reserved per GPU, and peak RSS on the host.

``reset_peaks()`` starts a measurement, ``read_peaks()`` reads it. On Linux the RSS high-water mark
is reset through ``/proc/self/clear_refs`` so one process can measure several models in turn;
elsewhere it is the process's lifetime peak.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

GIB = 1024 ** 3
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _cuda_devices() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def reset_peaks() -> None:
    """Start a new peak measurement (CUDA peak stats of every GPU and, on Linux, the RSS high-water mark)."""
    import torch

    for index in _cuda_devices():
        torch.cuda.reset_peak_memory_stats(index)
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """The process's peak resident memory since the last reset (Linux) or since it started."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def read_peaks() -> dict[str, Any]:
    """Peaks since :func:`reset_peaks`: overall and per-GPU CUDA numbers (None without a GPU), peak RSS."""
    import torch

    per_gpu = []
    for index in _cuda_devices():
        per_gpu.append({
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "peak_allocated_gb": round(torch.cuda.max_memory_allocated(index) / GIB, 4),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved(index) / GIB, 4),
        })
    return {
        "peak_vram_allocated_gb": round(sum(g["peak_allocated_gb"] for g in per_gpu), 4) if per_gpu else None,
        "peak_vram_reserved_gb": round(sum(g["peak_reserved_gb"] for g in per_gpu), 4) if per_gpu else None,
        "per_gpu": per_gpu,
        "peak_rss_gb": round(peak_rss_bytes() / GIB, 4),
    }
