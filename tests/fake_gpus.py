"""A fixed GPU inventory for tests (NVML cannot exist on the test machines): the GpuInventory interface."""

from __future__ import annotations

from dataclasses import dataclass

from engine.jobs.gpu import DriverInfo, GpuReading


@dataclass
class FakeInventory:
    """A fixed list of GPUs, standing in for GPUs and a driver that cannot exist on the test machines."""

    readings: list[GpuReading]
    driver_info: DriverInfo | None = None  # default: a driver when there are GPUs, none otherwise

    @classmethod
    def with_gpus(cls, count: int, memory_total: int = 24 << 30,
                  compute_capability: tuple[int, int] = (8, 0)) -> "FakeInventory":
        """``count`` idle GPUs named ``Fake GPU {i}``."""
        return cls([GpuReading(i, f"Fake GPU {i}", 0, memory_total, 0.0, 30.0, f"GPU-fake-{i}", compute_capability)
                    for i in range(count)])

    def gpus(self) -> list[GpuReading]:
        return list(self.readings)

    def driver(self) -> DriverInfo:
        if self.driver_info is not None:
            return self.driver_info
        if self.readings:
            return DriverInfo(True, "999.99", (13, 0))
        return DriverInfo(False, reason="NVMLError_LibraryNotFound: NVML Shared Library Not Found")
