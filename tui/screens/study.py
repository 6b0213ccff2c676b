"""The Studies view (TUI process): a study's progress, its table (headline metric, Δ and adjusted p against each row's
reference, size, Pareto rows marked ★) and the accuracy-vs-size frontier; pushed from Experiments on a study file.

The table comes from :mod:`engine.jobs.study_table` in a worker thread and is read again every few
seconds while jobs are under way; ``enter`` on a metric cell opens the paired comparison of that row with
its reference, on the flipped items of that test set.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from engine.jobs.study_table import StudyTable
from engine.workspace import Workspace
from tui.widgets.table_sync import clip, literal_cells

PARETO_MARK = "★"
#: Seconds between readings of the study while any of its jobs is queued or running.
REFRESH_S = 5.0


def study_progress(counts: dict[str, int]) -> str:
    """``done 5 / running 1 / queued 7 / failed 0 of 13 jobs``."""
    total = sum(counts.values())
    parts = [f"{status} {counts.get(status, 0)}" for status in ("done", "running", "queued", "failed")]
    missing = f", {counts['missing']} not queued" if counts.get("missing") else ""
    return " / ".join(parts) + f" of {total} jobs{missing}"


def study_cells(table: StudyTable, width: int = 80) -> tuple[list[str], list[list[Text]]]:
    """Headers and styled cells: ★ on Pareto rows (size or latency), significant adjusted p in bold colour."""
    from engine.jobs.study_table import study_cell_text

    headers = ["", "model", "status", *(f"{name} {metric}" for name, metric in table.columns.items()), "size MB"]
    name_width = max(20, min(48, width - 26 * len(table.columns) - 24))
    rows = []
    for row in table.rows:
        mark = PARETO_MARK if row.pareto_size or row.pareto_latency else ""
        cells = [Text(mark, style="bold yellow"), Text(clip(row.name, name_width)),
                 Text(row.status, style="" if row.status == "done" else "dim")]
        for name in table.columns:
            cell = row.cells[name]
            style = ""
            if cell.p_adjusted is not None and cell.p_adjusted < table.alpha and cell.delta is not None:
                style = "bold green" if cell.delta > 0 else "bold red"
            elif cell.value is None:
                style = "dim"
            cells.append(Text(study_cell_text(cell), style=style, justify="right"))
        cells.append(Text(f"{row.size_bytes / 1e6:.1f}" if row.size_bytes else "", justify="right"))
        rows.append(cells)
    return headers, rows


def frontier_points(table: StudyTable) -> tuple[list[tuple[float, float, str]], list[tuple[float, float]]]:
    """(size MB, mean headline, name) of every row with both, and the Pareto-on-size ones sorted by size."""
    points = []
    for row in table.rows:
        values = [row.cells[c].value for c in table.columns]
        if row.size_bytes and values and all(v is not None for v in values):
            points.append((row.size_bytes / 1e6, sum(values) / len(values), row.name))  # type: ignore[arg-type]
    front = sorted((x, y) for (x, y, name) in points if (r := table.row(name)) is not None and r.pareto_size)
    return points, front


class StudyScreen(Screen):
    """One study file: progress, the table with Pareto rows and adjusted p-values, and its frontier plot."""

    BINDINGS = [
        Binding("escape,q", "close", "Back", id="study.close"),
        Binding("g", "toggle_plot", "Frontier", id="study.plot"),
        Binding("r", "refresh", "Refresh", id="study.refresh"),
    ]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.table: StudyTable | None = None

    @property
    def ws(self) -> Workspace:
        return self.app.ws  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        with Vertical(id="study-main"):
            yield Static(Text.assemble(("Study ", "bold"), (self.path.stem, "bold cyan")), id="study-title")
            table: DataTable = DataTable(id="study-table", cursor_type="cell", zebra_stripes=True)
            table.loading = True
            yield table
            yield PlotextPlot(id="study-plot")
            yield Static("", id="study-notes")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#study-plot").display = False
        self.load()
        self.set_interval(REFRESH_S, self._refresh_if_busy)

    def _refresh_if_busy(self) -> None:
        if self.table is not None and (self.table.counts.get("running") or self.table.counts.get("queued")):
            self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        from engine.data.tasks import DatasetError, custom_tasks
        from engine.jobs.study import plan_study
        from engine.presets.study import StudyError, load_study
        from engine.jobs.study_table import study_table

        try:
            study = load_study(self.path, tuple(custom_tasks(self.ws.datasets_dir)))
            table = study_table(self.ws, plan_study(self.ws, study))
        except (StudyError, DatasetError, OSError) as exc:
            self.app.call_from_thread(self.failed, str(exc))
            return
        except Exception as exc:  # anything else must not leave the view loading forever: say what broke
            self.app.call_from_thread(self.failed, f"cannot read the study: {type(exc).__name__}: {exc}")
            return
        self.app.call_from_thread(self.show, table)

    def failed(self, message: str) -> None:
        self.query_one("#study-table", DataTable).loading = False
        self.query_one("#study-notes", Static).update(Text(message, style="red"))

    def show(self, table: StudyTable) -> None:
        from engine.jobs.study_table import study_notes

        self.table = table
        title = Text.assemble(("Study ", "bold"), (table.study, "bold cyan"), "  ", study_progress(table.counts))
        self.query_one("#study-title", Static).update(title)
        headers, rows = study_cells(table, self.size.width or 80)
        widget = self.query_one("#study-table", DataTable)
        cursor = widget.cursor_coordinate
        widget.clear(columns=True)
        widget.add_columns(*headers)
        for row, source in zip(rows, table.rows):
            widget.add_row(*literal_cells(row), key=source.name)
        widget.loading = False
        if cursor.row < len(rows):
            widget.cursor_coordinate = cursor
        self.query_one("#study-notes", Static).update(Text("\n".join(study_notes(table)), style="dim"))
        self._plot()

    def _plot(self) -> None:
        if self.table is None:
            return
        plot = self.query_one("#study-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        points, front = frontier_points(self.table)
        if points:
            plt.scatter([x for x, _, _ in points], [y for _, y, _ in points], marker="dot", label="variants")
        if front:
            plt.plot([x for x, _ in front], [y for _, y in front], marker="braille", label="Pareto frontier")
        plt.title("mean headline metric vs size (MB)")
        plt.xlabel("size MB")
        plot.refresh()

    @on(DataTable.CellSelected, "#study-table")
    def cell_chosen(self, event: DataTable.CellSelected) -> None:
        if self.table is None:
            return
        row = self.table.row(str(event.cell_key.row_key.value))
        column = event.coordinate.column - 3
        sets = list(self.table.columns)
        if row is None or not 0 <= column < len(sets):
            return
        cell = row.cells[sets[column]]
        if row.reference is None or cell.value is None:
            self.notify(f"{row.name} has no paired comparison on {sets[column]}: "
                        f"{cell.reason or 'it has no reference'}", severity="warning")
            return
        from tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen([row.reference, row.name], flips_of=sets[column]))

    def action_toggle_plot(self) -> None:
        plot = self.query_one("#study-plot")
        plot.display = not plot.display
        self.query_one("#study-table").display = not plot.display
        self._plot()

    def action_refresh(self) -> None:
        self.load()

    def action_close(self) -> None:
        self.app.pop_screen()
