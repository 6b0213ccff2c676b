"""The GPU panel: per GPU a memory gauge, utilisation, temperature and the job holding it (TUI).

Readings come from a :class:`engine.jobs.gpu.GpuInventory` (NVML on a real machine) polled in a thread
about once a second. With no NVIDIA GPU the panel says so and shows CPU and RAM gauges (psutil).
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.widgets import Static
from textual.worker import get_current_worker

from engine.jobs.gpu import GpuInventory, GpuReading, SystemReading, system_reading

GIB = 1 << 30


def gauge(fraction: float, width: int) -> Text:
    """``[█████░░░░░]`` coloured green → yellow → red as it fills."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    style = "green" if fraction < 0.7 else "yellow" if fraction < 0.9 else "red"
    return Text.assemble("[", ("█" * filled, style), ("░" * (width - filled), "dim"), "]")


def gpu_line(reading: GpuReading, holder: str, width: int) -> Text:
    """One GPU as one line that fits ``width`` columns (the name and holder shrink first)."""
    memory = f" {reading.memory_used / GIB:.1f}/{reading.memory_total / GIB:.1f}G"
    temperature = f" {reading.temperature:.0f}°C" if reading.temperature is not None else ""
    stats = f"{memory} util {reading.utilization:3.0f}%{temperature}"
    bar_width = max(min(20, width - len(stats) - 30), 5)
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"GPU{reading.index} ", style="bold")
    line.append_text(gauge(reading.memory_fraction, bar_width))
    line.append(stats)
    line.append(f"  {holder or 'free'}", style="cyan" if holder else "dim")
    line.append(f"  {reading.name}", style="dim")
    return line


def system_lines(system: SystemReading, width: int) -> list[Text]:
    bar = max(min(20, width - 40), 5)
    cpu = Text.assemble(("CPU  ", "bold"), gauge(system.cpu_percent / 100, bar),
                        f" {system.cpu_percent:3.0f}% of {system.cpu_count} cores, load {system.load_average[0]:.1f}")
    ram = Text.assemble(("RAM  ", "bold"), gauge(system.memory_used / max(system.memory_total, 1), bar),
                        f" {system.memory_used / GIB:.1f}/{system.memory_total / GIB:.1f}G")
    return [cpu, ram]


class GpuPanel(Static):
    """Polls ``inventory`` in a thread; :attr:`holders` (GPU index → job label) is set by the Jobs screen."""

    def __init__(self, inventory: GpuInventory, *, poll_s: float = 1.0, id: str | None = None) -> None:
        super().__init__("reading GPUs…", id=id)
        self.inventory = inventory
        self.poll_s = poll_s
        self.holders: dict[int, str] = {}
        self.readings: list[GpuReading] | None = None
        self.system: SystemReading | None = None

    def on_mount(self) -> None:
        self.poll()

    @work(thread=True, exclusive=True, group="gpu-poll", exit_on_error=False)
    def poll(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                readings = self.inventory.gpus()
                system = None if readings else system_reading()
            except Exception as exc:  # a driver hiccup must not end the panel
                readings, system = [], None
                self.app.call_from_thread(self.notify, f"GPU reading failed: {exc}", severity="warning")
            try:
                self.app.call_from_thread(self.show, readings, system)
            except RuntimeError:  # the app is closing
                return
            worker.cancelled_event.wait(self.poll_s)

    def show(self, readings: list[GpuReading], system: SystemReading | None) -> None:
        self.readings, self.system = readings, system
        self.redraw()

    def set_holders(self, holders: dict[int, str]) -> None:
        if holders != self.holders:
            self.holders = holders
            self.redraw()

    def redraw(self) -> None:
        if self.readings is None:
            return
        width = self.size.width or 80
        if self.readings:
            lines = [gpu_line(r, self.holders.get(r.index, ""), width) for r in self.readings]
        else:
            lines = [Text("No NVIDIA GPU found (NVML unavailable): jobs run on the CPU", style="yellow")]
            if self.system is not None:
                lines += system_lines(self.system, width)
        self.update(Text("\n").join(lines))

    def on_resize(self) -> None:
        self.redraw()
