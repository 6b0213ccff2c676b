"""GPU and system readings behind one small interface (worker, TUI, job process): NVML on a real machine.

Tests substitute a fixed list (``tests/fake_gpus.py``) through the :class:`GpuInventory` interface.

``pynvml`` (the ``nvidia-ml-py`` package) is imported inside the functions that use it; on a machine
without an NVIDIA driver every reading is simply an empty list.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment. ``index`` is NVML's (PCI bus order, as ``CUDA_DEVICE_ORDER=PCI_BUS_ID``)."""

    index: int
    name: str
    memory_used: int  # bytes
    memory_total: int  # bytes
    utilization: float  # percent of time a kernel ran over the last sample period
    temperature: float | None  # °C, None when the driver does not report it
    uuid: str = ""

    @property
    def memory_free(self) -> int:
        return max(self.memory_total - self.memory_used, 0)

    @property
    def memory_fraction(self) -> float:
        """Used memory as a fraction of the total (0 when the total is unknown)."""
        return self.memory_used / self.memory_total if self.memory_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GpuInventory(Protocol):
    """Anything that can list the machine's GPUs."""

    def gpus(self) -> list[GpuReading]: ...


class NvmlInventory:
    """The real GPUs, read through NVML; an empty list when NVML or the driver is unavailable."""

    _lock = threading.Lock()
    _initialised: bool | None = None  # None: not tried yet; False: NVML is unavailable here

    def _ready(self) -> bool:
        with self._lock:
            if NvmlInventory._initialised is None:
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    NvmlInventory._initialised = True
                except Exception:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
                    NvmlInventory._initialised = False
            return NvmlInventory._initialised

    def gpus(self) -> list[GpuReading]:
        if not self._ready():
            return []
        import pynvml

        readings = []
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError:
            return []
        for index in range(count):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                uuid = pynvml.nvmlDeviceGetUUID(handle)
            except pynvml.NVMLError:
                continue
            try:
                utilization = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                utilization = 0.0
            try:
                temperature = float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError:
                temperature = None
            readings.append(GpuReading(
                index=index, name=name.decode() if isinstance(name, bytes) else str(name),
                memory_used=int(memory.used), memory_total=int(memory.total), utilization=utilization,
                temperature=temperature, uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid)))
        return readings


def visible_gpu_count(inventory: GpuInventory | None = None) -> int:
    """THE number of GPUs this process may use: those NVML sees, limited by ``$CUDA_VISIBLE_DEVICES`` when set.

    0 on a CPU-only machine (jobs then ask for no GPU). Like CUDA, the list stops at its first entry that
    names no device (so ``""`` and ``-1`` hide them all); entries are indices or ``GPU-`` UUID prefixes.
    """
    gpus = (inventory or NvmlInventory()).gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return len(gpus)
    count = 0
    for entry in (e.strip() for e in visible.split(",")):
        known = (entry.isdigit() and int(entry) < len(gpus)) or \
            (entry.startswith("GPU-") and any(g.uuid.startswith(entry) for g in gpus))
        if not known:
            break
        count += 1
    return count


@dataclass(frozen=True)
class SystemReading:
    """CPU and memory of the whole machine at one moment."""

    cpu_percent: float  # all cores, since the previous reading in this process
    cpu_count: int
    memory_used: int  # bytes
    memory_total: int  # bytes
    load_average: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def system_reading() -> SystemReading:
    """Read CPU load and RAM use through psutil (the first call's CPU percent is 0.0)."""
    import os

    import psutil

    memory = psutil.virtual_memory()
    return SystemReading(cpu_percent=float(psutil.cpu_percent(interval=None)), cpu_count=os.cpu_count() or 1,
                         memory_used=int(memory.total - memory.available), memory_total=int(memory.total),
                         load_average=tuple(os.getloadavg()))
