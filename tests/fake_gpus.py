"""A fixed GPU inventory for tests (NVML cannot exist on the test machines): the GpuInventory interface."""

from __future__ import annotations

from dataclasses import dataclass

from engine.jobs.gpu import GpuReading


@dataclass
class FakeInventory:
    """A fixed list of GPUs, for tests and demos on machines where NVML cannot exist."""

    readings: list[GpuReading]

    @classmethod
    def with_gpus(cls, count: int, memory_total: int = 24 << 30) -> "FakeInventory":
        """``count`` idle GPUs named ``Fake GPU {i}``."""
        return cls([GpuReading(i, f"Fake GPU {i}", 0, memory_total, 0.0, 30.0, f"GPU-fake-{i}")
                    for i in range(count)])

    def gpus(self) -> list[GpuReading]:
        return list(self.readings)
