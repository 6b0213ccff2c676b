"""Jobs screen flows: a running job's live log, progress and loss curve, cancel, retry; the GPU panel.

NVML cannot exist on this machine (no NVIDIA driver), so the GPU panel is tested with
``tests/fake_gpus.FakeInventory`` behind the same ``GpuInventory`` interface the queue worker uses.
"""

from __future__ import annotations

import sys

from textual.app import App, ComposeResult
from textual.widgets import DataTable
from textual_plotext import PlotextPlot

from fake_gpus import FakeInventory
from engine.jobs.gpu import GpuReading
from engine.jobs.store import JobStore
from engine.jobs.worker import ensure_worker, stop_worker
from tui_workspace import make_workspace, wait_for
from tui.modals.confirm import ConfirmModal
from tui.screens.jobs import JobsScreen
from tui.widgets.gpu_panel import GpuPanel
from tui.widgets.log_tail import LogTail, split_lines
from tui.widgets.loss_chart import EVAL_LOSS, LEARNING_RATE, TRAIN_LOSS, LossChart

GIB = 1 << 30
#: A stand-in for a training command: log lines and train_step events until it is stopped.
FAKE_TRAINING = """
import json, os, time
events = open(os.environ["LLMTUI_EVENTS"], "a")
def emit(kind, **data):
    events.write(json.dumps({"t": time.time(), "kind": kind, **data}) + "\\n")
    events.flush()
emit("start")
step = 0
while True:
    step += 1
    print(f"step {step} loss {2.0 / step:.4f}", flush=True)
    emit("train_step", step=step, max_steps=1000, loss=2.0 / step, learning_rate=1e-3, tokens_per_s=1500.0)
    if step % 2 == 0:
        emit("eval", step=step, max_steps=1000, eval_loss=2.5 / step)
    time.sleep(0.15)
"""


def _panel_text(app) -> str:
    return str(app.screen.query_one("#gpu-panel", GpuPanel).render())


async def test_running_job_streams_its_log_and_progress_survives_closing_the_app_and_can_be_cancelled(tmp_path, tui_app):
    ws = make_workspace(tmp_path / "ws")
    with JobStore(ws) as store:
        job = store.enqueue("train", [sys.executable, "-u", "-c", FAKE_TRAINING], target="stand-in-model",
                            description="a stand-in training job")
    ensure_worker(ws)  # the real worker runs the job in its own process group
    try:
        app = tui_app(ws, gpus=0)
        async with app.run_test(size=(100, 36)) as pilot:
            await pilot.press("3")
            screen = app.screen
            assert isinstance(screen, JobsScreen)
            await wait_for(pilot, lambda: job.id in screen.views and screen.views[job.id].job.status == "running",
                           timeout=20, what="the job to run")
            log = screen.query_one("#job-log", LogTail)
            await wait_for(pilot, lambda: any(line.startswith("step ") for line in log.lines), timeout=20,
                           what="the first log lines")
            seen = log.line_count
            await wait_for(pilot, lambda: log.line_count >= seen + 3, what="new log lines to appear")
            assert log.lines[-1].startswith("step ")

            view = screen.views[job.id]
            assert view.total == 1000 and view.done >= 3 and view.label == "train"
            assert view.eta_s is not None and view.eta_s > 0
            chart = screen.query_one("#loss-chart", LossChart)
            await wait_for(pilot, lambda: len(chart.curve.eval_steps) >= 2, what="eval losses on the chart")
            assert chart.curve.steps[:3] == [1, 2, 3] and chart.curve.losses[0] == 2.0
            assert chart.curve.eval_steps[:2] == [2, 4] and chart.curve.eval_losses[0] == 1.25
            assert chart.series == [TRAIN_LOSS, EVAL_LOSS, LEARNING_RATE]
            drawn = str(chart.query_one("#loss-plot", PlotextPlot).render())
            assert "1.0e-03" in drawn and "2.00┤" in drawn  # the lr axis (right) and the first loss (left)
            legend = str(chart.query_one("#loss-readout").render())
            assert all(name in legend for name in (TRAIN_LOSS, EVAL_LOSS, LEARNING_RATE))
            assert "No NVIDIA GPU" in _panel_text(app)  # the inventory is empty: CPU and RAM instead
            assert "CPU" in _panel_text(app) and "RAM" in _panel_text(app)
            await pilot.press("q")
        assert app.return_code == 0

        with JobStore(ws) as store:  # closing the app left the job running
            assert store.require(job.id).status == "running"
        reopened = tui_app(ws, gpus=0)
        async with reopened.run_test(size=(100, 36)) as pilot:
            await pilot.press("3")
            screen = reopened.screen
            await wait_for(pilot, lambda: screen.selected_id == job.id, what="the job in the reopened app")
            log = screen.query_one("#job-log", LogTail)
            await wait_for(pilot, lambda: log.line_count > seen and any(line.startswith("step 1 ")
                                                                        for line in log.lines),
                           what="the whole log shown again")
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(reopened.screen, ConfirmModal), what="the confirmation")
            await pilot.press("y")
            await wait_for(pilot, lambda: screen.views[job.id].job.status == "cancelled", timeout=30,
                           what="the job to be cancelled")
            with JobStore(ws) as store:
                assert store.require(job.id).status == "cancelled"
    finally:
        stop_worker(ws)


async def test_gpu_panel_shows_memory_utilisation_temperature_and_the_holding_job(tmp_path, tui_app):
    ws = make_workspace(tmp_path / "ws")
    inventory = FakeInventory([
        GpuReading(0, "Fake H100", 40 * GIB, 80 * GIB, 93.0, 61.0),
        GpuReading(1, "Fake H100", 2 * GIB, 80 * GIB, 0.0, None),
    ])
    with JobStore(ws) as store:
        job = store.enqueue("eval", ["true"], target="some-model", gpus=1)
        assert store.claim(job.id, [1])  # running on GPU 1 (no process is needed for the display)
    app = tui_app(ws, gpu_inventory=inventory)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: f"#{job.id} eval" in _panel_text(app), what="the holder on the GPU line")
        gpu0, gpu1 = _panel_text(app).splitlines()
        assert gpu0.startswith("GPU0") and "40.0/80.0G" in gpu0 and "util  93%" in gpu0 and "61°C" in gpu0
        assert "free" in gpu0
        assert gpu1.startswith("GPU1") and "2.0/80.0G" in gpu1 and f"#{job.id} eval" in gpu1 and "°C" not in gpu1


def _failed_job(ws, target: str):
    with JobStore(ws) as store:
        job = store.enqueue("eval", ["false"], target=target)
        store.claim(job.id, [])
        store.finish(job.id, 1, error="exit code 1")
    return job


async def test_retry_queues_a_copy_of_a_failed_job(tmp_path, tui_app):
    ws = make_workspace(tmp_path / "ws")
    job = _failed_job(ws, "some-model")
    app = tui_app(ws, gpus=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        screen = app.screen
        await wait_for(pilot, lambda: screen.selected_id == job.id, what="the failed job")
        await pilot.press("R")
        await wait_for(pilot, lambda: len(screen.views) == 2, what="the retried job")
        with JobStore(ws) as store:
            copy = store.list()[-1]
        assert (copy.status, copy.retry_of, copy.command) == ("queued", job.id, ["false"])


class _TailApp(App):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        yield LogTail(initial_bytes=64 << 10, poll_s=0.05, id="log")

    def on_mount(self) -> None:
        self.query_one(LogTail).follow(self.path)


async def test_log_tail_reads_only_the_end_of_a_big_file_then_follows_it(tmp_path):
    path = tmp_path / "log.txt"
    line = "x" * 90 + "\n"  # 91 bytes
    with open(path, "w") as handle:
        for i in range(200_000):  # ~18 MB: far more than the 64 KiB read at first
            handle.write(f"{i:08d} {line}")
    app = _TailApp(path)
    async with app.run_test() as pilot:
        log = app.query_one(LogTail)
        await wait_for(pilot, lambda: log.line_count > 0, what="the tail")
        assert log.line_count <= (64 << 10) // 100 + 1  # only the last 64 KiB, never the whole file
        assert log.lines[-1].startswith("00199999 ")
        assert all(len(text) == 99 for text in log.lines)  # the cut first line was dropped
        with open(path, "a") as handle:
            handle.write("appended one\nappended two\rappended two (final)\npartial")
        await wait_for(pilot, lambda: log.lines[-1] == "appended two (final)", what="appended lines")
        assert log.lines[-2] == "appended one"
        path.write_text("rewritten\n")  # a shorter file starts over
        await wait_for(pilot, lambda: log.lines == ["rewritten"], what="the rewritten file")


def test_split_lines_keeps_the_unfinished_rest():
    assert split_lines(b"a\r\nb\rc\npart") == (["a", "c"], b"part")
    assert split_lines(b"caf\xc3\xa9\n\xff\n") == (["café", "\ufffd"], b"")


def test_the_jobs_screen_says_where_a_training_resumed():
    from engine.jobs.progress import JobProgress
    from engine.jobs.store import Job
    from tui.screens.jobs import job_view

    progress = JobProgress()
    progress.update([{"t": 100.0, "kind": "start", "resumed_from_step": 250},
                     {"t": 110.0, "kind": "train_step", "step": 260, "max_steps": 300, "loss": 1.0}])
    job = Job(id=1, kind="train", target="m", description="", status="running", command=["true"], preset=None,
              options={}, depends_on=[], gpus_requested=0, gpus_assigned=[], pid=None, pid_created=None,
              created_at=90.0, started_at=95.0, ended_at=None, exit_code=None, error="", log_tail="", log_path="",
              events_path="", retry_of=None, cancel_requested_at=None, failed_dependency=None)
    view = job_view(job, progress, 110.0)
    assert view.label == "train (resumed at step 250)" and (view.done, view.total) == (260, 300)


async def test_names_with_brackets_are_shown_as_written(tmp_path, tui_app):
    """DataTable reads a plain string as Rich markup: ``[/x]`` in a name would stop the screen, ``[bold]``
    would vanish. Every table cell is shown literally."""
    ws = make_workspace(tmp_path / "ws")
    job = _failed_job(ws, "run[/x]-[bold]v2")
    app = tui_app(ws, gpus=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        screen = app.screen
        await wait_for(pilot, lambda: screen.selected_id == job.id, what="the failed job")
        table = screen.query_one("#jobs", DataTable)
        shown = [table.render_line(y).text for y in range(table.size.height)]
        assert any("run[/x]-[bold]v2" in line for line in shown), shown
