"""GPU and system readings behind one small interface (worker, TUI, job process, doctor): NVML on a real machine.

Tests substitute a fixed list (``tests/fake_gpus.py``) through the :class:`GpuInventory` interface.

``pynvml`` (the ``nvidia-ml-py`` package) is imported inside the functions that use it; on a machine
without an NVIDIA driver every reading is simply an empty list and :meth:`GpuInventory.driver` says why.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GpuProcess:
    """A process holding a GPU, as NVML lists it (``pid`` is in the host's pid namespace)."""

    pid: int
    memory_used: int | None  # bytes; None when the driver does not say (e.g. under MIG or in some containers)


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
    compute_capability: tuple[int, int] | None = None  # (8, 0) for an A100; None when the driver does not say
    processes: tuple[GpuProcess, ...] = ()  # compute and graphics processes holding this GPU

    @property
    def memory_free(self) -> int:
        return max(self.memory_total - self.memory_used, 0)

    @property
    def memory_fraction(self) -> float:
        """Used memory as a fraction of the total (0 when the total is unknown)."""
        return self.memory_used / self.memory_total if self.memory_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriverInfo:
    """The NVIDIA driver as NVML reports it, or why NVML could not be read (``available`` False)."""

    available: bool
    driver_version: str = ""
    cuda_version: tuple[int, int] | None = None  # the newest CUDA runtime this driver supports
    reason: str = ""  # why NVML is unavailable (no driver, nvidia-ml-py missing, ...)


class GpuInventory(Protocol):
    """Anything that can list the machine's GPUs and say which driver runs them."""

    def gpus(self) -> list[GpuReading]: ...

    def driver(self) -> DriverInfo: ...


class NvmlInventory:
    """The real GPUs, read through NVML; an empty list when NVML or the driver is unavailable."""

    _lock = threading.Lock()
    _initialised: bool | None = None  # None: not tried yet; False: NVML is unavailable here
    _failure = ""  # why nvmlInit failed

    def _ready(self) -> bool:
        with self._lock:
            if NvmlInventory._initialised is None:
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    NvmlInventory._initialised = True
                except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
                    NvmlInventory._initialised = False
                    NvmlInventory._failure = f"{type(exc).__name__}: {exc}"
            return NvmlInventory._initialised

    def driver(self) -> DriverInfo:
        if not self._ready():
            return DriverInfo(False, reason=self._failure)
        import pynvml

        try:
            version = _text(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError as exc:
            return DriverInfo(False, reason=f"nvmlSystemGetDriverVersion: {exc}")
        try:
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())  # 12040 means CUDA 12.4
            cuda_version: tuple[int, int] | None = (cuda // 1000, cuda % 1000 // 10)
        except pynvml.NVMLError:
            cuda_version = None
        return DriverInfo(True, version, cuda_version)

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
            try:
                capability: tuple[int, int] | None = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            except pynvml.NVMLError:
                capability = None
            readings.append(GpuReading(
                index=index, name=_text(name), memory_used=int(memory.used), memory_total=int(memory.total),
                utilization=utilization, temperature=temperature, uuid=_text(uuid),
                compute_capability=capability, processes=_processes(pynvml, handle)))
        return readings


def _text(value: bytes | str) -> str:
    """NVML strings are bytes in older nvidia-ml-py releases."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _processes(pynvml: Any, handle: Any) -> tuple[GpuProcess, ...]:
    """Compute and graphics processes on one GPU (a process listed by both is kept once)."""
    found: dict[int, GpuProcess] = {}
    for query in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
        try:
            listed = query(handle)
        except pynvml.NVMLError:
            continue
        for process in listed:
            used = getattr(process, "usedGpuMemory", None)
            found.setdefault(int(process.pid), GpuProcess(int(process.pid), int(used) if used is not None else None))
    return tuple(found[pid] for pid in sorted(found))


@dataclass
class SelectedGpus:
    """The GPUs of ``inventory`` whose NVML index is in ``indexes`` (a worker confined to some GPUs)."""

    inventory: GpuInventory
    indexes: frozenset[int]

    def gpus(self) -> list[GpuReading]:
        return [reading for reading in self.inventory.gpus() if reading.index in self.indexes]

    def driver(self) -> DriverInfo:
        return self.inventory.driver()


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
