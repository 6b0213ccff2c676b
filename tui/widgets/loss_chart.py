"""The training curve of a job: a loss sparkline and the latest loss, learning rate and speed (TUI)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static


def training_readout(latest: dict[str, float], points: int) -> Text:
    """``loss 1.234 (min 0.98) · lr 5e-03 · 1.2k tok/s · epoch 0.40 · 3.1 GB``."""
    parts = []
    if "loss" in latest:
        parts.append(("loss ", f"{latest['loss']:.4g}"))
    if "learning_rate" in latest:
        parts.append(("lr ", f"{latest['learning_rate']:.2e}"))
    if "tokens_per_s" in latest:
        speed = latest["tokens_per_s"]
        parts.append(("", f"{speed / 1000:.1f}k tok/s" if speed >= 1000 else f"{speed:.0f} tok/s"))
    if "epoch" in latest:
        parts.append(("epoch ", f"{latest['epoch']:.2f}"))
    if "gpu_mem_gb" in latest:
        parts.append(("", f"{latest['gpu_mem_gb']:.1f} GB"))
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (label, value) in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        text.append(label, style="dim")
        text.append(value, style="bold")
    text.append(f"  ({points} loss points)" if points else "no loss reported yet", style="dim")
    return text


class LossChart(Vertical):
    """Hidden for jobs that do not train; :meth:`show` gives it the curve."""

    DEFAULT_CSS = """
    LossChart { height: auto; }
    LossChart Sparkline { height: 2; }
    LossChart #loss-readout { height: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Sparkline([], id="loss-line")
        yield Static("", id="loss-readout")

    def show(self, losses: list[float], latest: dict[str, float]) -> None:
        self.query_one("#loss-line", Sparkline).data = list(losses)
        self.query_one("#loss-readout", Static).update(training_readout(latest, len(losses)))
