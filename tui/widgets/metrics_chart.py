"""Grouped bars of the marked models' headline metric per test set (TUI, textual-plotext), with a
legend line naming each model in its bar colour."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

#: Bar colours in marking order (plotext name, Rich style); more models reuse them.
BAR_COLORS = (("cyan", "cyan"), ("orange", "dark_orange"), ("magenta", "magenta"), ("green", "green"),
              ("blue", "blue"), ("red", "red"))


class MetricsChart(Vertical):
    """:meth:`show` draws ``values[model][test set]`` (None: not evaluated there, drawn as 0 and said)."""

    DEFAULT_CSS = """
    MetricsChart { height: 1fr; min-height: 10; max-height: 20; border-top: hkey $panel-lighten-2; }
    MetricsChart PlotextPlot { height: 1fr; }
    MetricsChart #chart-legend { height: auto; max-height: 3; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.drawn: tuple = ()  # (models, test sets, values, unit) last drawn

    def compose(self) -> ComposeResult:
        yield Static("", id="chart-legend")
        yield PlotextPlot(id="chart-plot")

    def show(self, models: list[str], sets: list[tuple[str, str]], values: dict[str, dict[str, float | None]],
             percent: bool) -> None:
        """``sets`` are (column key, label); ``values`` are fractions, shown ×100 when ``percent``."""
        drawn = (tuple(models), tuple(sets), tuple((m, tuple(sorted(values.get(m, {}).items()))) for m in models),
                 percent)
        if drawn == self.drawn:
            return
        self.drawn = drawn
        scale = 100.0 if percent else 1.0
        legend = Text(no_wrap=False)
        plt = self.query_one("#chart-plot", PlotextPlot).plt
        plt.clear_figure()
        if not models or not sets:
            legend.append("mark models with space to chart their headline metric per test set", style="dim")
        else:
            bars = [[(values.get(m, {}).get(key) or 0.0) * scale for key, _ in sets] for m in models]
            colors = [BAR_COLORS[i % len(BAR_COLORS)] for i in range(len(models))]
            plt.multiple_bar([label for _, label in sets], bars, color=[c[0] for c in colors])
            plt.ylim(0, scale)
            for i, (model, color) in enumerate(zip(models, colors)):
                if i:
                    legend.append("  ")
                legend.append("■ ", style=f"bold {color[1]}")
                legend.append(model)
                missing = [label for key, label in sets if values.get(model, {}).get(key) is None]
                if missing:
                    legend.append(f" (no {', '.join(missing)})", style="dim")
            legend.append(f"  — {'%' if percent else 'fraction'}, headline metric per test set", style="dim")
        self.query_one("#chart-legend", Static).update(legend)
        self.query_one("#chart-plot", PlotextPlot).refresh()
