"""Screen 4: one row per metrics file, sortable, with marks for the side-by-side comparison, a bar chart
of the marked models' headline metric per test set, and rates as fractions or percentages (remembered).
Runs in the TUI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from engine.data.tasks import builtin_tasks_for_display
from engine.results.lmeval import DATASET_PREFIX as LM_EVAL_PREFIX
from engine.results.metrics_files import ResultsTable, is_rate, metric_direction
from engine.results.records import ResultRecord
from engine.data.kinds import TABLE_METRICS
from tui.format import METRIC_TITLES
from tui.messages import WorkspaceChanged
from tui.preferences import load_preferences, remember
from tui.screens.base import WorkspaceScreen
from tui.widgets.metrics_chart import MetricsChart
from tui.widgets.table_sync import Column, TableSync, clip

#: The table's columns in priority order (the last ones drop first on a narrow terminal): results
#: column key → header.
SHOWN = {
    **{f"{task.file_stem}__{metric}": f"{task.display_title} {METRIC_TITLES[metric]}"
       for task in builtin_tasks_for_display() for metric in TABLE_METRICS[task.kind]},
    "overall_accuracy": "overall", "latency_mean_s": "latency s", "eval_peak_vram_allocated_gb": "eval GB",
    "train_peak_vram_allocated_gb": "train GB",
}
MARK = "●"
#: Row key holding why a metrics file could not be read.
BROKEN = "_unreadable"
NAME_MIN, NAME_MAX = 18, 48


#: lm-evaluation-harness metrics shown (as ``lm:TASK acc``) beside llmtui's own: acc, acc_norm, exact_match
#: (with any filter's name appended).
LM_EVAL_SHOWN = ("acc", "exact_match")


def _custom_label(key: str) -> str:
    dataset, _, metric = key.rpartition("__")
    if dataset.startswith(LM_EVAL_PREFIX):
        return f"lm:{dataset[len(LM_EVAL_PREFIX):][:10]} {metric.replace('exact_match', 'em')}"
    return f"{dataset[:10]} acc"


@dataclass
class SortOrder:
    key: str = "model"
    reverse: bool = False


def sort_rows(rows: list[dict[str, Any]], order: SortOrder) -> list[dict[str, Any]]:
    """Rows sorted by one column; missing values always last."""
    present = [r for r in rows if r.get(order.key) is not None]
    missing = [r for r in rows if r.get(order.key) is None]

    def key(row: dict[str, Any]) -> Any:
        value = row[order.key]
        return value.casefold() if isinstance(value, str) else value

    return sorted(present, key=key, reverse=order.reverse) + missing


def best_first(key: str) -> bool:
    """Whether sorting by ``key`` starts descending (scores) rather than ascending (latency, memory)."""
    return metric_direction(key.rpartition("__")[2] if "__" in key else key) == "higher"


def display_number(key: str, value: Any, percent: bool) -> str:
    """A cell's text: rates as ``0.245`` or ``24.5`` (percent), other floats rounded, "-" when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if percent and is_rate(key):
            return f"{value * 100:.1f}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def headline_columns(records: list[ResultRecord]) -> dict[str, str]:
    """Test set name → the results column of its headline metric (:func:`engine.data.kinds.headline_metric`)."""
    from engine.data.kinds import headline_metric

    columns: dict[str, str] = {}
    for record in records:
        for result in record.datasets.values():
            if (metric := headline_metric(result.kind, result.metrics)) is not None:
                columns.setdefault(result.name, f"{result.name}__{metric}")
    return columns


class ResultsScreen(WorkspaceScreen):
    """The results table; ``c`` compares the marked rows."""

    MODE = "results"
    AUTO_FOCUS = "#results"
    BINDINGS = [
        Binding("s", "cycle_sort", "Sort", id="results.sort"),
        Binding("space", "toggle_mark", "Mark", id="results.mark"),
        Binding("c", "compare", "Compare", id="results.compare"),
        Binding("l", "lineage", "Lineage", id="results.lineage"),
        Binding("x", "export", "Export", id="results.export"),
        Binding("g", "toggle_chart", "Chart", id="results.chart"),
        Binding("percent_sign", "toggle_percent", "Units", key_display="%", show=False, id="results.percent"),
        Binding("r", "refresh", "Refresh", show=False, id="results.refresh"),
    ]
    PALETTE = (("Clear marks", "clear_marks", "unmark every row"),)

    def __init__(self) -> None:
        super().__init__()
        self.table_data: ResultsTable | None = None
        self.rows: list[dict[str, Any]] = []
        self.marked: list[str] = []  # in marking order: the first is the comparison's reference
        self.order = SortOrder()
        self.percent = False  # rates as percentages (remembered per workspace in .llmtui/tui.json)
        self.headlines: dict[str, str] = {}  # test set → its headline column

    def compose(self) -> ComposeResult:
        yield self.tabs()
        table: DataTable = DataTable(id="results", cursor_type="row", zebra_stripes=True)
        table.loading = True
        yield table
        yield Static("", id="results-bar", classes="status-bar")
        yield MetricsChart(id="results-chart")
        yield self.footer()

    def on_mount(self) -> None:
        self._sync = TableSync(self.query_one("#results", DataTable))
        self.query_one("#results-chart", MetricsChart).display = False
        self.load()

    @work(thread=True, exclusive=True, group="results-load", exit_on_error=False)
    def load(self) -> None:
        """Read every metrics file; an unreadable one becomes a row of its own marked broken."""
        from engine.results.metrics_files import results_table, scan_results

        percent = load_preferences(self.ws)["results_percent"]
        try:
            records = scan_results(self.ws)
            data = results_table(self.ws, records)
        except OSError as exc:
            self.app.call_from_thread(self.notify, f"cannot read {self.ws.metrics_dir}: {exc}", severity="error")
            records, data = [], ResultsTable(columns=[], rows=[])
        data.rows += [{"model": r.path.stem, BROKEN: r.error} for r in records if r.error]
        headlines = headline_columns([r for r in records if not r.error])
        if not get_current_worker().is_cancelled:  # a newer load is on its way
            self.app.call_from_thread(self.show_table, data, headlines, percent)

    def on_workspace_changed(self, message: WorkspaceChanged) -> None:
        if message.parts & {"metrics", "models"}:
            self.load()

    def action_refresh(self) -> None:
        self.load()

    def show_table(self, data: ResultsTable, headlines: dict[str, str] | None = None,
                   percent: bool | None = None) -> None:
        if percent is not None and self.table_data is None:  # the remembered unit, on the first load
            self.percent = percent
        self.headlines = headlines or {}
        if data.errors and (self.table_data is None or data.errors != self.table_data.errors):
            self.notify("\n".join(data.errors[:5]), title=f"{len(data.errors)} unreadable metrics file(s)",
                        severity="warning", timeout=10)
        self.table_data = data
        self.rows = data.rows
        names = {row["model"] for row in data.rows}
        self.marked = [name for name in self.marked if name in names]
        self.redraw()
        table = self.query_one("#results", DataTable)
        table.loading = False
        if self.focused is None:
            table.focus()

    def available_keys(self) -> list[str]:
        """Columns with a value in some row: the shown ones, then custom test sets' accuracy."""
        present = {key for row in self.rows for key, value in row.items() if value is not None}
        custom = sorted(k for k in present if k.endswith("__accuracy") and k not in SHOWN)
        lm_eval = sorted(k for k in present if k.startswith(LM_EVAL_PREFIX)
                         and k.rpartition("__")[2].startswith(LM_EVAL_SHOWN))
        return [k for k in SHOWN if k in present] + custom + lm_eval

    def columns(self) -> list[Column]:
        width = self.size.width or 80
        columns = [Column("mark", " "), Column("model", "model")]
        used = 2 + 3 + NAME_MIN + 2
        for key in self.available_keys():
            label = SHOWN.get(key) or _custom_label(key)
            cost = max(len(label), 6) + 2
            if used + cost > width:
                break
            columns.append(Column(key, label))
            used += cost
        return columns

    def redraw(self) -> None:
        columns = self.columns()
        spare = (self.size.width or 80) - sum(max(len(c.label), 6) + 2 for c in columns if c.key != "model") - 4
        name_width = min(max(spare, NAME_MIN), NAME_MAX)
        labels = [self._header(c) for c in columns]
        cells = []
        for row in sort_rows(self.rows, self.order):
            name = row["model"]
            values = []
            for column in columns:
                if column.key == "mark":
                    values.append(Text(MARK if name in self.marked else " ", style="bold magenta"))
                elif column.key == "model":
                    style = "red" if row.get(BROKEN) else "bold" if name in self.marked else ""
                    values.append(Text(clip(("✗ " if row.get(BROKEN) else "") + name, name_width), style=style))
                else:
                    number = display_number(column.key, row.get(column.key), self.percent)
                    values.append(Text(number, style="dim" if number == "-" else "", justify="right"))
            cells.append((name, tuple(values)))
        self._sync.show([Column(c.key, label) for c, label in zip(columns, labels)], cells)
        self.update_bar()
        self.update_chart()

    def update_chart(self) -> None:
        chart = self.query_one("#results-chart", MetricsChart)
        if not chart.display:
            return
        rows = {row["model"]: row for row in self.rows if not row.get(BROKEN)}
        models = [m for m in self.marked if m in rows]
        order = list(SHOWN)
        keys = sorted(self.headlines.items(), key=lambda item: (order.index(item[1]) if item[1] in order
                                                                 else len(order), item[0].casefold()))
        sets = [(key, SHOWN.get(key) or f"{name[:10]} acc") for name, key in keys
                if any(rows[m].get(key) is not None for m in models)]
        chart.show(models, sets, {m: {key: rows[m].get(key) for key, _ in sets} for m in models}, self.percent)

    def _header(self, column: Column) -> str:
        if column.key != self.order.key:
            return column.label
        return f"{column.label} {'▼' if self.order.reverse else '▲'}"

    def on_resize(self) -> None:
        if self.table_data is not None:
            self.redraw()

    @on(DataTable.RowHighlighted, "#results")
    def update_bar(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{len(self.rows)} results")
        text.append(" · rates in %" if self.percent else " · rates as fractions", style="dim")
        if self.table_data and self.table_data.errors:
            text.append(f" · {len(self.table_data.errors)} unreadable", style="red")
        sort_label = SHOWN.get(self.order.key, self.order.key)
        text.append(f" · sorted by {sort_label} {'▼' if self.order.reverse else '▲'}")
        name = self.highlighted_model()
        broken = next((row[BROKEN] for row in self.rows if row["model"] == name and row.get(BROKEN)), None)
        if broken:
            text.append(f" · ✗ {broken}", style="red")
        if self.marked:
            text.append(f" · marked {len(self.marked)}: ", style="magenta")
            text.append(", ".join(self.marked), style="magenta")
            text.append("  (c compares)" if len(self.marked) > 1 else "  (mark another to compare)", style="dim")
        self.query_one("#results-bar", Static).update(text)

    # ------------------------------------------------------------------------------ actions

    def highlighted_model(self) -> str | None:
        table = self.query_one("#results", DataTable)
        if not table.row_count or table.cursor_row < 0:
            return None
        return str(table.ordered_rows[table.cursor_row].key.value)

    def sort_by(self, key: str) -> None:
        if key == self.order.key:
            self.order = SortOrder(key, not self.order.reverse)
        else:
            self.order = SortOrder(key, best_first(key))
        self.redraw()

    def action_cycle_sort(self) -> None:
        keys = ["model", *(c.key for c in self.columns() if c.key not in ("mark", "model"))]
        following = keys[(keys.index(self.order.key) + 1) % len(keys)] if self.order.key in keys else "model"
        self.order = SortOrder(following, best_first(following))
        self.redraw()

    @on(DataTable.HeaderSelected, "#results")
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key != "mark":
            self.sort_by(key)

    def action_toggle_mark(self) -> None:
        name = self.highlighted_model()
        if name is None:
            return
        if name in self.marked:
            self.marked.remove(name)
        else:
            self.marked.append(name)
        self.redraw()

    def action_toggle_chart(self) -> None:
        chart = self.query_one("#results-chart", MetricsChart)
        chart.display = not chart.display
        self.update_chart()

    def action_toggle_percent(self) -> None:
        self.percent = not self.percent
        self.redraw()
        self.remember_percent(self.percent)

    @work(thread=True, group="results-preferences", exit_on_error=False)
    def remember_percent(self, percent: bool) -> None:
        try:
            remember(self.ws, results_percent=percent)
        except OSError as exc:
            self.app.call_from_thread(self.notify, f"{exc}", title="the unit is not remembered", severity="warning")

    def action_clear_marks(self) -> None:
        self.marked = []
        self.redraw()

    def action_compare(self) -> None:
        from tui.screens.compare import CompareScreen

        if len(self.marked) < 2:
            self.notify("mark at least two results with space (the first marked is the reference)",
                        severity="warning")
            return
        self.app.push_screen(CompareScreen(list(self.marked)))

    def action_lineage(self) -> None:
        from tui.screens.lineage import LineageScreen

        name = self.highlighted_model()
        if name is None:
            self.notify("no result highlighted", severity="warning")
            return
        self.app.push_screen(LineageScreen(name))

    def action_export(self) -> None:
        from tui.modals.export import ExportModal

        if self.table_data is None or not self.rows:
            self.notify("no results to export yet", severity="warning")
            return

        def chosen(choice: tuple[str, Path] | None) -> None:
            if choice is not None:
                self.export(*choice)

        self.app.push_screen(ExportModal(self.ws, "Export the results table", ["csv", "markdown", "latex", "json"],
                                         "results"), chosen)

    @work(thread=True, group="results-export", exit_on_error=False)
    def export(self, fmt: str, path: Path) -> None:
        from engine.results import export
        from engine.files import write_text

        assert self.table_data is not None
        data = ResultsTable(self.table_data.columns, [r for r in sort_rows(self.rows, self.order) if not r.get(BROKEN)])
        render = {"csv": export.results_csv, "markdown": export.results_markdown, "latex": export.results_latex,
                  "json": export.results_json}[fmt]
        try:
            write_text(path, render(data))
        except OSError as exc:
            self.app.call_from_thread(self.notify, f"{path}: {exc}", title="not exported", severity="error")
            return
        self.app.call_from_thread(self.notify, f"wrote {path}", title="exported")
