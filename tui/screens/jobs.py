"""Screen 3: the job queue, the highlighted job's progress, loss curve and live log, and the GPUs (TUI)."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, ProgressBar, Static
from textual.worker import get_current_worker

from engine.events import EventTail
from engine.jobs.job_folder import CANCELLING, STATUSES, JobStatus
from engine.jobs.progress import JobProgress, TrainingCurve
from engine.jobs.store import Job, JobStore
from tui.format import human_duration, slurm_state_text, status_style
from tui.messages import WorkspaceChanged
from tui.modals.confirm import ConfirmModal
from tui.screens.base import WorkspaceScreen
from tui.widgets.gpu_panel import GpuPanel
from tui.widgets.log_tail import LogTail
from tui.widgets.loss_chart import LossChart
from tui.widgets.table_sync import Column, TableSync, clip, visible_columns

#: The most recent jobs listed.
MAX_JOBS = 500
#: The status column fits the longest status, so no status is ever cut.
STATUS_WIDTH = max(len(s) for s in (*STATUSES, CANCELLING))
#: How often the screen asks Slurm about the workspace's Slurm jobs (squeue is not free on a busy cluster).
SLURM_SYNC_S = 5.0
COLUMNS = [
    Column("id", "#"), Column("status", "status", width=STATUS_WIDTH), Column("kind", "kind"), Column("target", "target"),
    Column("gpu", "GPU"), Column("elapsed", "elapsed"), Column("eta", "ETA"), Column("what", "description", 150),
]


@dataclass
class JobView:
    """A job with what its events say, as one poll saw it."""

    job: Job
    elapsed_s: float | None = None
    label: str = ""
    done: int = 0
    total: int = 0
    fraction: float | None = None
    eta_s: float | None = None
    curve: TrainingCurve = field(default_factory=TrainingCurve)
    latest: dict[str, float] = field(default_factory=dict)
    event_error: str = ""


def job_view(job: Job, progress: JobProgress | None, now: float) -> JobView:
    """Combine a queue row and its folded events at time ``now``."""
    if job.started_at is None:
        elapsed = None
    else:
        elapsed = (job.ended_at if job.ended_at is not None else now) - job.started_at
    view = JobView(job, elapsed)
    if progress is not None:
        view.label, view.done, view.total = progress.label, progress.done, progress.total
        if progress.resumed_from_step is not None and view.label:
            view.label += f" (resumed at step {progress.resumed_from_step})"
        view.fraction = progress.fraction
        view.eta_s = progress.eta_s(now) if job.status == JobStatus.RUNNING else None
        view.curve, view.latest = progress.curve.copy(), dict(progress.latest)
        view.event_error = progress.error
    return view


class JobsScreen(WorkspaceScreen):
    """Queue table on top, the highlighted job below, the GPU panel at the bottom."""

    MODE = "jobs"
    AUTO_FOCUS = "#jobs"
    BINDINGS = [
        Binding("c", "cancel", "Cancel job", id="jobs.cancel"),
        Binding("R", "retry", "Retry", id="jobs.retry"),
        Binding("l", "toggle_follow", "Follow log", id="jobs.follow"),
    ]

    def __init__(self, *, poll_s: float = 0.5) -> None:
        super().__init__()
        self.poll_s = poll_s
        self.views: dict[int, JobView] = {}
        self.order: list[int] = []
        self.selected_id: int | None = None
        self._reload = threading.Event()
        self._sync: TableSync | None = None
        self._cells: dict[int, tuple[JobView, tuple]] = {}  # job id → (view, its cells)
        self._cells_layout: tuple = ()

    def compose(self) -> ComposeResult:
        yield self.tabs()
        with Vertical(id="jobs-main"):
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="job-panel"):
                yield Static("no job selected", id="job-title")
                with Horizontal(id="job-progress-line"):
                    yield ProgressBar(total=None, show_eta=False, id="job-progress")
                    yield Static("", id="job-progress-text")
                yield LossChart(id="loss-chart")
                yield LogTail(id="job-log")
            yield GpuPanel(self.llmtui.gpu_inventory, id="gpu-panel")
        yield self.footer()

    def on_mount(self) -> None:
        self._sync = TableSync(self.query_one("#jobs", DataTable))
        self.query_one("#loss-chart", LossChart).display = False
        self.query_one("#job-progress-line", Horizontal).display = False
        self.poll()

    # ------------------------------------------------------------------------------ polling

    def on_workspace_changed(self, message: WorkspaceChanged) -> None:
        if "queue" in message.parts:
            self._reload.set()

    @work(thread=True, exclusive=True, group="jobs-poll", exit_on_error=False)
    def poll(self) -> None:
        """Re-read the queue when it changed and the events of running and highlighted jobs."""
        worker = get_current_worker()
        store: JobStore | None = None
        version: int | None = None
        jobs: list[Job] = []
        trackers: dict[int, tuple[EventTail, JobProgress]] = {}
        warned = False
        synced = 0.0
        self._reload.set()
        try:
            while not worker.is_cancelled:
                if time.monotonic() - synced > SLURM_SYNC_S and self._uses_slurm(jobs):
                    synced = time.monotonic()
                    self._sync_slurm()
                try:
                    if store is None and self.ws.queue_db.exists():
                        store = JobStore(self.ws)
                    if store is not None:
                        now_version = store.data_version()
                        if now_version != version or self._reload.is_set():
                            self._reload.clear()
                            jobs, version = store.list(limit=MAX_JOBS), now_version
                except sqlite3.Error as exc:
                    if not warned:
                        self.app.call_from_thread(self.notify, f"cannot read the job queue: {exc}",
                                                  severity="error")
                        warned = True
                now = self.llmtui.clock()
                views = []
                for job in reversed(jobs):
                    if job.status == JobStatus.RUNNING or job.id == self.selected_id or job.id in trackers:
                        tail, progress = trackers.setdefault(
                            job.id, (EventTail(self.ws.root / job.events_path), JobProgress()))
                        progress.update(tail.read_new())
                    tracker = trackers.get(job.id)
                    views.append(job_view(job, tracker[1] if tracker else None, now))
                try:
                    self.app.call_from_thread(self.show_jobs, views)
                except RuntimeError:  # the app is closing
                    return
                worker.cancelled_event.wait(self.poll_s)
        finally:
            if store is not None:
                store.close()

    def _uses_slurm(self, jobs: list[Job]) -> bool:
        if any(job.slurm_job_id and not job.finished for job in jobs):
            return True
        from engine.jobs.settings import WorkerError, load_worker_settings

        try:
            return load_worker_settings(self.ws).slurm.enabled
        except WorkerError:
            return False

    def _sync_slurm(self) -> None:
        """Submit waiting jobs and read Slurm's state into the queue (the poll then sees the change)."""
        from engine.jobs.settings import WorkerError
        from engine.jobs.slurm import SlurmError, sync

        try:
            sync(self.ws)
        except (SlurmError, WorkerError, sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="cannot sync with Slurm", severity="warning")

    # ------------------------------------------------------------------------------ display

    def show_jobs(self, views: list[JobView]) -> None:
        self.views = {v.job.id: v for v in views}
        self.order = [v.job.id for v in views]
        columns = visible_columns(COLUMNS, self.size.width)
        layout = (tuple(columns), self.size.width)
        if layout != self._cells_layout:
            self._cells, self._cells_layout = {}, layout
        rows = []
        for view in views:
            cached = self._cells.get(view.job.id)
            if cached is None or cached[0] != view:
                cached = self._cells[view.job.id] = (view, self._cells_of(view, columns))
            rows.append((str(view.job.id), cached[1]))
        assert self._sync is not None
        self._sync.show(columns, rows)
        if self.selected_id is None:  # first look: the running job (its progress and loss plot)
            self._cursor_to_running(views)
        if self.selected_id not in self.views:
            self.select_row()
        self.update_panel()
        holders = {gpu: f"#{v.job.id} {v.job.kind}" for v in views if v.job.status == JobStatus.RUNNING
                   for gpu in v.job.gpus_assigned}
        self.query_one("#gpu-panel", GpuPanel).set_holders(holders)

    def _cells_of(self, view: JobView, columns: list[Column]) -> tuple:
        job = view.job
        status = job.status
        if status == JobStatus.RUNNING and job.cancel_requested_at is not None:
            status = CANCELLING
        target_width = max(self.size.width - 60, 16)
        values = {
            "id": Text(str(job.id), justify="right"),
            "status": Text(status, style=status_style(job.status)),
            "kind": job.kind,
            "target": clip(job.target or "-", target_width),
            "gpu": (job.node or "slurm") if job.slurm_job_id else (
                ",".join(map(str, job.gpus_assigned)) or ("cpu" if job.status == JobStatus.RUNNING else "-")),
            "elapsed": human_duration(view.elapsed_s),
            "eta": human_duration(view.eta_s) if view.eta_s is not None else "-",
            "what": clip(job.description, 60),
        }
        return tuple(values[c.key] for c in columns)

    def _cursor_to_running(self, views: list[JobView]) -> None:
        running = next((v.job.id for v in views if v.job.status == JobStatus.RUNNING), None)
        table = self.query_one("#jobs", DataTable)
        if running is not None and str(running) in table.rows:
            table.move_cursor(row=table.get_row_index(str(running)), animate=False)

    def on_resize(self) -> None:
        if self.views:
            self.show_jobs([self.views[i] for i in self.order])

    def select_row(self) -> None:
        table = self.query_one("#jobs", DataTable)
        if table.row_count and 0 <= table.cursor_row < table.row_count:
            self.selected_id = int(table.ordered_rows[table.cursor_row].key.value)
        else:
            self.selected_id = None

    @on(DataTable.RowHighlighted, "#jobs")
    def row_highlighted(self) -> None:
        self.select_row()
        self.update_panel()
        self._reload.set()

    def update_panel(self) -> None:
        view = self.views.get(self.selected_id) if self.selected_id is not None else None
        log = self.query_one("#job-log", LogTail)
        progress_line = self.query_one("#job-progress-line", Horizontal)
        chart = self.query_one("#loss-chart", LossChart)
        title = self.query_one("#job-title", Static)
        if view is None:
            title.update("no jobs yet: queue evaluations on the Models screen (e, E) or a pipeline on "
                         "Experiments (ctrl+r)" if not self.views else "no job selected")
            progress_line.display = chart.display = False
            log.follow(None)
            return
        job = view.job
        text = Text(no_wrap=False)
        text.append(f"#{job.id} {job.kind} ", style="bold")
        text.append(job.target or "-")
        text.append(f"  {job.status}", style=status_style(job.status))
        if job.depends_on and job.status == JobStatus.QUEUED:
            text.append(f"  waits for #{', #'.join(map(str, job.depends_on))}", style="dim")
        if job.slurm_job_id:
            text.append(f"\nSlurm job {job.slurm_job_id}: {slurm_state_text(job)}", style="dim")
        error = job.error or view.event_error
        if error and job.status != JobStatus.DONE:
            text.append(f"\n{error}", style="red")
        title.update(text)
        progress_line.display = bool(view.label)
        if view.label:
            bar = self.query_one("#job-progress", ProgressBar)
            bar.update(total=view.total or None, progress=view.done)
            eta = f" · ETA {human_duration(view.eta_s)}" if view.eta_s is not None else ""
            self.query_one("#job-progress-text", Static).update(f" {view.label} {view.done}/{view.total or '?'}{eta}")
        chart.display = job.kind == "train"
        if job.kind == "train":
            chart.show(view.curve, view.latest)
        log.follow(self.ws.root / job.log_path if job.log_path else None)

    # ------------------------------------------------------------------------------ actions

    def _selected_job(self) -> Job | None:
        view = self.views.get(self.selected_id) if self.selected_id is not None else None
        return view.job if view else None

    def action_cancel(self) -> None:
        job = self._selected_job()
        if job is None:
            return
        if job.finished:
            self.notify(f"job #{job.id} is already {job.status}", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel_job(job.id)

        what = "stop the running process" if job.status == JobStatus.RUNNING else "remove it from the queue"
        self.app.push_screen(ConfirmModal(f"Cancel job #{job.id} ({job.kind} {job.target})? This will {what}.",
                                          yes="Cancel job", no="Keep it"), answered)

    @work(thread=True, group="jobs-cancel", exit_on_error=False)
    def cancel_job(self, job_id: int) -> None:
        from engine.jobs.control import cancel_job
        from engine.jobs.settings import WorkerError
        from engine.jobs.store import JobError

        try:
            status = cancel_job(self.ws, job_id)
        except (JobError, WorkerError, sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="not cancelled", severity="error")
            return
        self.app.call_from_thread(self.notify, f"job #{job_id}: {status}")
        self._reload.set()

    def action_retry(self) -> None:
        job = self._selected_job()
        if job is not None:
            self.retry_job(job.id)

    @work(thread=True, group="jobs-retry", exit_on_error=False)
    def retry_job(self, job_id: int) -> None:
        from engine.jobs.store import JobError

        try:
            with JobStore(self.ws) as store:
                jobs = store.retry(job_id)
        except (JobError, sqlite3.Error) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="not retried", severity="error")
            return
        self.app.call_from_thread(self.llmtui.jobs_queued, len(jobs), f"retry of #{job_id}")

    def action_toggle_follow(self) -> None:
        log = self.query_one("#job-log", LogTail)
        log.auto_scroll = not log.auto_scroll
        if log.auto_scroll:
            log.scroll_end(animate=False)
        self.notify("following the log" if log.auto_scroll else "log paused (l follows again)")

