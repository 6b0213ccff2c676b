"""The training chart of a job (TUI): train loss, eval loss and learning rate against the step, and a
readout of the latest loss, learning rate and speed. Plotted with textual-plotext; the learning rate
has its own axis on the right (it is orders of magnitude smaller than the loss)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from engine.jobs.progress import TrainingCurve

#: Series names (the readout under the plot is its legend, in the plot's colours).
TRAIN_LOSS, EVAL_LOSS, LEARNING_RATE = "train loss", "eval loss", "lr (right axis)"
#: Plotext colour and the matching Rich style of each series.
COLORS = {TRAIN_LOSS: ("cyan", "cyan"), EVAL_LOSS: ("orange", "dark_orange"), LEARNING_RATE: ("magenta", "magenta")}


def training_readout(latest: dict[str, float], curve: TrainingCurve) -> Text:
    """The legend with the latest values, then speed: ``━ train loss 1.234 · ● eval loss 1.3 · ━ lr (right
    axis) 5.00e-03 · 1.2k tok/s · epoch 0.40 · 3.1 GB``."""
    parts: list[tuple[str, str, str]] = []  # (marker in its series' style, label, value)
    if "loss" in latest:
        parts.append((TRAIN_LOSS, f"{TRAIN_LOSS} ", f"{latest['loss']:.4g}"))
    if curve.eval_losses:
        parts.append((EVAL_LOSS, f"{EVAL_LOSS} ", f"{curve.eval_losses[-1]:.4g}"))
    if "learning_rate" in latest:
        parts.append((LEARNING_RATE, f"{LEARNING_RATE} ", f"{latest['learning_rate']:.2e}"))
    if "tokens_per_s" in latest:
        speed = latest["tokens_per_s"]
        parts.append(("", "", f"{speed / 1000:.1f}k tok/s" if speed >= 1000 else f"{speed:.0f} tok/s"))
    if "epoch" in latest:
        parts.append(("", "epoch ", f"{latest['epoch']:.2f}"))
    if "gpu_mem_gb" in latest:
        parts.append(("", "", f"{latest['gpu_mem_gb']:.1f} GB"))
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (series, label, value) in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        if series:
            text.append("● " if series == EVAL_LOSS else "━ ", style=f"bold {COLORS[series][1]}")
        text.append(label, style="dim")
        text.append(value, style="bold")
    if not curve.losses:
        text.append("no loss reported yet", style="dim")
    return text


def step_ticks(low: int, high: int, count: int) -> list[int]:
    """About ``count`` round step numbers (multiples of 1, 2 or 5 × 10^k) between ``low`` and ``high``."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** max(len(str(int(raw))) - 1, 0)
    stride = min((m * magnitude for m in (1, 2, 5, 10)), key=lambda candidate: abs(candidate - raw))
    first = -(-low // stride) * stride
    return list(range(first, high + 1, stride)) or [low]


def plot_curve(plt, curve: TrainingCurve, width: int) -> list[str]:
    """Draw ``curve`` on a plotext ``plt`` (the x axis is the step); return the series drawn."""
    plt.clear_figure()
    drawn: list[str] = []
    if curve.steps:
        plt.plot(curve.steps, curve.losses, marker="braille", color=COLORS[TRAIN_LOSS][0])
        drawn.append(TRAIN_LOSS)
    if curve.eval_steps:
        plt.scatter(curve.eval_steps, curve.eval_losses, marker="●", color=COLORS[EVAL_LOSS][0])
        drawn.append(EVAL_LOSS)
    rates = [(s, lr) for s, lr in zip(curve.steps, curve.learning_rates) if lr is not None]
    if rates:
        plt.plot([s for s, _ in rates], [lr for _, lr in rates], marker="braille", color=COLORS[LEARNING_RATE][0],
                 yside="right")
        drawn.append(LEARNING_RATE)
        top = max(max(lr for _, lr in rates), 1e-12)
        plt.ylim(0, top * 1.05, yside="right")  # from 0, so a constant rate reads as one, not as noise
        plt.yticks([0, top / 2, top], ["0", f"{top / 2:.1e}", f"{top:.1e}"], yside="right")
    steps = curve.steps + curve.eval_steps
    if steps:
        plt.xticks(step_ticks(min(steps), max(steps), max(width // 12, 2)))
    return drawn


class LossChart(Vertical):
    """Hidden for jobs that do not train; :meth:`show` gives it the curve."""

    DEFAULT_CSS = """
    LossChart { height: 2fr; min-height: 9; max-height: 18; }
    LossChart PlotextPlot { height: 1fr; }
    LossChart #loss-readout { height: 1; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.curve = TrainingCurve()
        self.series: list[str] = []  # what the plot shows now

    def compose(self) -> ComposeResult:
        yield Static("", id="loss-readout")
        yield PlotextPlot(id="loss-plot")

    def on_mount(self) -> None:
        self.show(self.curve, {})

    def on_resize(self) -> None:
        self._draw()

    def show(self, curve: TrainingCurve, latest: dict[str, float]) -> None:
        self.query_one("#loss-readout", Static).update(training_readout(latest, curve))
        if curve == self.curve and self.series:
            return
        self.curve = curve
        self._draw()

    def _draw(self) -> None:
        plot = self.query_one("#loss-plot", PlotextPlot)
        self.series = plot_curve(plot.plt, self.curve, self.size.width)
        plot.refresh()
