"""Screen 1: every model folder with its status, refreshed when models, metrics or jobs change (TUI)."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static
from textual.worker import get_current_worker

from engine.data.tasks import builtin_tasks_for_display
from engine.jobs.job_folder import JobStatus
from engine.models.index import ModelIndex
from engine.models.scan import ModelRecord
from tui.format import METRIC_TITLES, human_count, human_size, status_style
from tui.messages import WorkspaceChanged
from tui.screens.base import WorkspaceScreen
from tui.widgets.table_sync import Column, TableSync, clip, visible_columns

#: Short column titles for the built-in test sets (others show their own name).
TEST_SET_TITLES = {task.test_file: task.display_title for task in builtin_tasks_for_display()}
FIXED_COLUMNS = [
    Column("name", "name"), Column("status", "status"), Column("base", "base", 170), Column("dataset", "dataset", 120),
    Column("peft", "peft", 120), Column("quant", "quant", 140), Column("params", "params", 100),
    Column("size", "size", 90), Column("date", "date", 160),
]
#: A long table is filled a part per frame: the first rows show at once, the rest follow in parts.
FIRST_ROWS, FILL_PART = 100, 1000
#: Job states that replace the model scan's status in the table.
JOB_STATES_SHOWN = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass
class ModelRow:
    """One line of the table: a model folder, or a model a queued job will create."""

    name: str
    status: str
    record: ModelRecord | None

    def matches(self, words: list[str]) -> bool:
        r = self.record
        haystack = " ".join([self.name, self.status, *((r.base_model, r.dataset, r.peft, r.quant_tag, r.kind)
                                                        if r else ())]).lower()
        return all(word in haystack for word in words)


def merge_job_status(records: list[ModelRecord], jobs: dict[str, str]) -> list[ModelRow]:
    """Rows for the table: a queued/running job shows instead of the folder's status; a failed job
    marks an untested model ``failed``; models that queued jobs will create get rows of their own."""
    rows = []
    for record in records:
        job = jobs.get(record.name)
        status = record.status
        if job in JOB_STATES_SHOWN:
            status = job
        elif job in (JobStatus.FAILED, JobStatus.INTERRUPTED) and status == "untested":
            status = JobStatus.FAILED
        rows.append(ModelRow(record.name, status, record))
    known = {r.name for r in records}
    rows += [ModelRow(name, job, None) for name, job in sorted(jobs.items())
             if name not in known and job in JOB_STATES_SHOWN]
    return sorted(rows, key=lambda row: row.name.lower())


class ModelsScreen(WorkspaceScreen):
    """The models table with filter, details, and evaluation keys."""

    MODE = "models"
    AUTO_FOCUS = "#models"
    BINDINGS = [
        Binding("slash", "filter", "Filter", key_display="/", id="models.filter"),
        Binding("e", "evaluate", "Evaluate", id="models.evaluate"),
        Binding("E", "evaluate_untested", "Eval all untested", id="models.evaluate_untested"),
        Binding("enter", "details", "Details", id="models.details"),
        Binding("r", "refresh", "Refresh", show=False, id="models.refresh"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="models.clear_filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.index: ModelIndex | None = None
        self._index_lock = threading.Lock()
        self._pending: tuple[bool, bool] = (False, False)  # (rescan, force) asked of the next load
        self.rows: list[ModelRow] = []
        self.loaded = False
        self.filter_text = ""
        self._test_sets: list[tuple[str, str]] = []  # (test file, metric)
        self._sync: TableSync | None = None
        self._cells: dict[str, tuple[ModelRow, tuple]] = {}  # name → (row, its cells), for unchanged rows
        self._cells_layout: tuple = ()
        self._broken_seen: set[str] = set()  # broken folders already reported in a notification
        self._fill_limit: int | None = None  # rows in the table while it is being filled (None: all)
        self._fill_scheduled = False

    def compose(self) -> ComposeResult:
        yield self.tabs()
        yield Input(placeholder="filter: words in name, status, dataset, method…", id="filter", compact=True)
        table: DataTable = DataTable(id="models", cursor_type="row", zebra_stripes=True)
        table.loading = True
        yield table
        yield Static("", id="model-bar", classes="status-bar two-lines")
        yield self.footer()

    def on_mount(self) -> None:
        self._sync = TableSync(self.query_one("#models", DataTable))
        self.query_one("#filter", Input).display = False
        self.load()

    # ------------------------------------------------------------------------------ loading

    def load(self, force: bool = False, rescan: bool = True) -> None:
        """Refresh the job states, and the index when folders or metrics changed (all of it with
        ``force``). A load that a newer one supersedes leaves its rescan to the newer one."""
        with self._index_lock:
            self._pending = (self._pending[0] or rescan, self._pending[1] or force)
        self._load()

    @work(thread=True, exclusive=True, group="models-load", exit_on_error=False)
    def _load(self) -> None:
        from engine.jobs.store import job_status_by_target

        try:
            jobs = job_status_by_target(self.ws)
        except sqlite3.Error as exc:
            jobs = {}
            self.app.call_from_thread(self.notify, f"cannot read the job queue: {exc}", severity="warning")
        with self._index_lock:
            (rescan, force), self._pending = self._pending, (False, False)
            if self.index is None:  # the first load: show the last scan at once, then refresh it
                self.index = ModelIndex.load(self.ws)
                if self.index.records():
                    self.app.call_from_thread(self.show_rows, merge_job_status(self.index.records(), jobs))
                rescan = True
            changed = self.index.refresh(force=force) if rescan else set()
            records = self.index.records()
            if changed:
                self._save_index()
        if not get_current_worker().is_cancelled:  # a newer load is on its way
            self.app.call_from_thread(self.show_rows, merge_job_status(records, jobs))

    def _save_index(self) -> None:
        """Keep the scan for the next start (a read-only workspace only loses that head start)."""
        assert self.index is not None
        try:
            self.index.save()
        except OSError:
            pass

    def on_workspace_changed(self, message: WorkspaceChanged) -> None:
        if message.parts & {"models", "metrics", "queue"}:
            self.load(rescan=bool(message.parts & {"models", "metrics"}))

    def action_refresh(self) -> None:
        self.load(force=True)

    # ------------------------------------------------------------------------------ display

    def show_rows(self, rows: list[ModelRow]) -> None:
        broken = [row for row in rows if row.status == "broken" and row.name not in self._broken_seen]
        if broken:
            self._broken_seen.update(row.name for row in broken)
            listed = "\n".join(f"{row.name}: {row.record.reason if row.record else ''}" for row in broken[:3])
            more = f"\n… and {len(broken) - 3} more" if len(broken) > 3 else ""
            self.notify(listed + more, title=f"{len(broken)} broken model folder(s)", severity="warning", timeout=8)
        self.rows = rows
        self.loaded = True
        sets = {(f, v.get("metric", "")) for row in rows if row.record for f, v in row.record.headline.items()}
        order = list(TEST_SET_TITLES)
        self._test_sets = sorted(sets, key=lambda s: (order.index(s[0]) if s[0] in order else len(order), s))
        self.redraw()
        table = self.query_one("#models", DataTable)
        table.loading = False
        if self.focused is None:
            table.focus()

    def columns(self) -> list[Column]:
        sets = [Column(f"set:{file}:{metric}", f"{TEST_SET_TITLES.get(file, _short_set(file))} "
                       f"{METRIC_TITLES.get(metric, metric)}") for file, metric in self._test_sets]
        return visible_columns(FIXED_COLUMNS, self.size.width) + sets

    def redraw(self) -> None:
        columns = self.columns()
        words = self.filter_text.lower().split()
        shown = [row for row in self.rows if row.matches(words)] if words else self.rows
        fixed_width = sum(_column_width(c.key) + 2 for c in columns if c.key != "name")
        name_width = max(self.size.width - fixed_width - 4, 16)
        layout = (tuple(columns), name_width)
        if layout != self._cells_layout:
            self._cells, self._cells_layout = {}, layout
        assert self._sync is not None
        table = self.query_one("#models", DataTable)
        if self._fill_limit is None and len(shown) - table.row_count > FILL_PART:
            self._fill_limit = FIRST_ROWS  # many rows to add: show the first ones in this frame
        part = shown if self._fill_limit is None else shown[:self._fill_limit]
        self._sync.show(columns, [(row.name, self._row_cells(row, columns, name_width)) for row in part])
        if self._fill_limit is not None:
            if self._fill_limit >= len(shown):
                self._fill_limit = None
            elif not self._fill_scheduled:
                self._fill_scheduled = True
                self.call_after_refresh(self._fill_more)
        self.update_bar()

    def _fill_more(self) -> None:
        self._fill_scheduled = False
        if self._fill_limit is not None:
            self._fill_limit += FILL_PART
            self.redraw()

    def _row_cells(self, row: ModelRow, columns: list[Column], name_width: int) -> tuple:
        """The row's cells, reused while its record (the index keeps unchanged ones) and status are the same."""
        cached = self._cells.get(row.name)
        if cached is not None and cached[0].record is row.record and cached[0].status == row.status:
            return cached[1]
        cells = self._cells_of(row, columns, name_width)
        self._cells[row.name] = (row, cells)
        return cells

    def _cells_of(self, row: ModelRow, columns: list[Column], name_width: int) -> tuple:
        r = row.record
        values: dict[str, object] = {
            "name": Text(clip(row.name, name_width), no_wrap=True),
            "status": Text(row.status, style=status_style(row.status)),
        }
        if r is not None:
            values.update(base=clip(r.base_model, 24), dataset=r.dataset or "-", peft=r.peft or "-",
                          quant=clip(r.quant_tag or "-", 24), params=human_count(r.params),
                          size=human_size(r.size_bytes), date=(r.date or "-")[:10])
        cells = []
        for column in columns:
            if column.key.startswith("set:"):
                _, file, _metric = column.key.split(":", 2)
                value = r.headline.get(file, {}).get("value") if r else None
                cells.append(Text(f"{value:.3f}" if isinstance(value, (int, float)) else "-", justify="right"))
            else:
                cells.append(values.get(column.key, "-"))
        return tuple(cells)

    def on_resize(self) -> None:
        if self.loaded:
            self.redraw()

    def highlighted(self) -> ModelRow | None:
        table = self.query_one("#models", DataTable)
        if not table.row_count or table.cursor_row < 0:
            return None
        key = table.ordered_rows[table.cursor_row].key.value
        return next((row for row in self.rows if row.name == key), None)

    @on(DataTable.RowHighlighted, "#models")
    def update_bar(self) -> None:
        row = self.highlighted()
        bar = self.query_one("#model-bar", Static)
        total = len(self.rows)
        counts = {}
        for r in self.rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        summary = " ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.filter_text:
            text.append(f"filter '{self.filter_text}' · ", style="bold")
        text.append(f"{total} models ({summary})" if total else "no models in Models/ yet")
        if row is not None:
            text.append("\n▸ ", style="dim")
            text.append(row.name, style="bold")
            reason = row.record.reason if row.record else "will be created by a queued job"
            if reason:
                text.append(f" — {reason}", style=status_style(row.status))
        bar.update(text)

    # ------------------------------------------------------------------------------ filter

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.redraw()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = bool(self.filter_text)
        self.query_one("#models", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.query_one("#models", DataTable).focus()

    # ------------------------------------------------------------------------------ actions

    @on(DataTable.RowSelected, "#models")
    def action_details(self) -> None:
        from tui.modals.model_details import ModelDetailsModal

        row = self.highlighted()
        if row is None:
            return
        if row.record is None:
            self.notify(f"{row.name} does not exist yet: a queued job will create it")
            return
        self.app.push_screen(ModelDetailsModal(self.ws, row.record, row.status))

    def action_evaluate(self) -> None:
        row = self.highlighted()
        if row is None:
            return
        if row.record is None or row.status in JOB_STATES_SHOWN:
            self.notify(f"{row.name} is already {row.status}", severity="warning")
            return
        if row.status == "broken":
            self.notify(f"cannot evaluate {row.name}: {row.record.reason}", severity="error")
            return
        self.enqueue_eval([row.name], row.name)

    def action_evaluate_untested(self) -> None:
        names = [row.name for row in self.rows if row.status == "untested"]
        if not names:
            self.notify("no untested models: every model is tested, broken, queued or running")
            return
        self.enqueue_eval(names, f"evaluation of {len(names)} untested model{'s' if len(names) != 1 else ''}")

    @work(thread=True, group="models-enqueue", exit_on_error=False)
    def enqueue_eval(self, names: list[str], what: str) -> None:
        from engine.data.tasks import custom_tasks
        from engine.jobs.enqueue import enqueue_eval
        from engine.jobs.store import JobError

        try:
            jobs = enqueue_eval(self.ws, names, custom_datasets=tuple(custom_tasks(self.ws.datasets_dir)),
                                inventory=self.llmtui.gpu_inventory)
        except (JobError, sqlite3.Error, OSError, ValueError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="not queued", severity="error")
            return
        self.app.call_from_thread(self.llmtui.jobs_queued, len(jobs), what)



def _short_set(file: str) -> str:
    name = file.removesuffix(".parquet")
    return name.removeprefix("test-")[:10]


def _column_width(key: str) -> int:
    """Typical content width of a column (for sizing the name column to the terminal)."""
    return {"status": 9, "base": 24, "dataset": 8, "peft": 8, "quant": 24, "params": 6, "size": 7,
            "date": 10}.get(key, 9)
