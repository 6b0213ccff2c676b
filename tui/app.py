"""The llmtui app: five screens (models, experiments, jobs, results, chat) over one workspace (TUI process).

The app process never runs anything heavy and never imports torch or transformers: screens read files
in thread workers, and training, quantization and evaluation run as queued jobs in the workspace's
worker process (started on demand unless ``autostart_worker`` is off; closing the app leaves it and
its jobs running).
"""

from __future__ import annotations

import importlib
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from engine.jobs.gpu import GpuInventory, NvmlInventory
from engine.workspace import Workspace
from tui.messages import WorkspaceChanged
from tui.modals.confirm import ConfirmModal
from tui.modals.help import HelpModal
from tui.screens.base import WorkspaceScreen
from tui.workspace_watch import changed_parts, workspace_stamps

#: Mode → the ``module:Class`` of its screen, imported when the screen is first needed: a start pays
#: only for the Models screen (the plot and form libraries load with their screens).
MAIN_SCREENS: dict[str, str] = {
    "models": "tui.screens.models:ModelsScreen", "experiments": "tui.screens.experiments:ExperimentsScreen",
    "jobs": "tui.screens.jobs:JobsScreen", "results": "tui.screens.results:ResultsScreen",
    "chat": "tui.screens.chat:ChatScreen",
}


def screen_class(mode: str) -> type[WorkspaceScreen]:
    """The screen class of a main mode (imported on first use)."""
    module, _, name = MAIN_SCREENS[mode].partition(":")
    return getattr(importlib.import_module(module), name)


def _new_screen(mode: str) -> WorkspaceScreen:
    return screen_class(mode)()


class ActionsProvider(Provider):
    """The command palette's list of every action of every screen, each run on its screen."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        assert isinstance(app, LlmTuiApp)
        return app.palette_commands()

    async def discover(self) -> Hits:
        for title, callback, help_text in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


class LlmTuiApp(App[None]):
    """The TUI. ``gpu_inventory`` defaults to NVML; ``clock`` gives "now" for elapsed times and ETAs."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute, so subclasses elsewhere find it too
    TITLE = "llmtui"
    MODES = {mode: partial(_new_screen, mode) for mode in MAIN_SCREENS}
    DEFAULT_MODE = "models"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS = [
        Binding("1", "switch_mode('models')", "Models", show=False, id="app.models"),
        Binding("2", "switch_mode('experiments')", "Experiments", show=False, id="app.experiments"),
        Binding("3", "switch_mode('jobs')", "Jobs", show=False, id="app.jobs"),
        Binding("4", "switch_mode('results')", "Results", show=False, id="app.results"),
        Binding("5", "switch_mode('chat')", "Chat", show=False, id="app.chat"),
        Binding("D", "demo_pipeline", "Queue the demo's example", show=False, id="app.demo"),
        Binding("question_mark", "help", "Help", key_display="?", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(self, ws: Workspace, *, gpu_inventory: GpuInventory | None = None, autostart_worker: bool = True,
                 clock: Callable[[], float] = time.time, poll_interval_s: float = 1.0) -> None:
        super().__init__()
        self.ws = ws
        self.gpu_inventory: GpuInventory = gpu_inventory or NvmlInventory()
        self.autostart_worker = autostart_worker
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self._screens: list[WorkspaceScreen] = []
        self._stop = threading.Event()

    # ------------------------------------------------------------------------------ workspace changes

    def on_mount(self) -> None:
        self.watch_workspace()
        if self.autostart_worker:
            self.resume_queue()
        self.offer_demo()

    def on_unmount(self) -> None:
        self._stop.set()

    def register_screen(self, screen: WorkspaceScreen) -> None:
        """Main screens call this on mount to get :class:`WorkspaceChanged` messages."""
        self._screens.append(screen)

    @work(thread=True, exclusive=True, group="watch", exit_on_error=False)
    def watch_workspace(self) -> None:
        """Stat the watched paths about once a second; tell the screens what changed."""
        stamps = workspace_stamps(self.ws)
        while not self._stop.wait(self.poll_interval_s):
            now = workspace_stamps(self.ws)
            parts = changed_parts(stamps, now)
            if parts:
                stamps = now
                self.post_message(WorkspaceChanged(parts))

    def on_workspace_changed(self, message: WorkspaceChanged) -> None:
        self.announce(message.parts)

    def announce(self, parts: Iterable[str]) -> None:
        """Tell every main screen that ``parts`` changed (also used right after the app itself writes)."""
        parts = frozenset(parts)
        for screen in self._screens:
            screen.post_message(WorkspaceChanged(parts))

    # ------------------------------------------------------------------------------ the queue

    def jobs_queued(self, count: int, what: str) -> None:
        """After enqueueing: say so, refresh the screens and make sure a worker runs the jobs."""
        self.notify(f"queued {count} job{'s' if count != 1 else ''}: {what}", title="queue")
        self.announce({"queue"})
        if self.autostart_worker:
            self.start_worker()

    @work(thread=True, exclusive=True, group="start-worker", exit_on_error=False)
    def resume_queue(self) -> None:
        """On opening: start a worker when jobs wait or run but none watches them (say, after a reboot)."""
        import sqlite3

        from engine.jobs.control import run_queued
        from engine.jobs.job_folder import JobStatus
        from engine.jobs.settings import WorkerError
        from engine.jobs.store import JobStore
        from engine.jobs.worker import worker_pid

        if not self.ws.queue_db.exists() or worker_pid(self.ws):
            return
        try:
            with JobStore(self.ws) as store:
                counts = store.counts()
            if counts.get(JobStatus.QUEUED, 0) + counts.get(JobStatus.RUNNING, 0) == 0:
                return
            how = run_queued(self.ws)  # on Slurm: submits what waits and syncs the state from Slurm
        except (sqlite3.Error, WorkerError) as exc:
            self.call_from_thread(self.notify, str(exc), title="worker did not start", severity="error",
                                  timeout=15)
            return
        self.call_from_thread(self.notify, f"waiting jobs: {how}", title="queue")

    @work(thread=True, exclusive=True, group="start-worker", exit_on_error=False)
    def start_worker(self) -> None:
        """Start the workspace's detached worker unless one runs (it outlives the app), or submit the
        queued jobs to Slurm when the workspace runs on Slurm."""
        from engine.jobs.control import run_queued
        from engine.jobs.settings import WorkerError

        try:
            run_queued(self.ws)
        except WorkerError as exc:
            self.call_from_thread(self.notify, str(exc), title="worker did not start", severity="error",
                                  timeout=15)

    # ------------------------------------------------------------------------------ the demo's first minutes

    @work(thread=True, exclusive=True, group="demo-offer", exit_on_error=False)
    def offer_demo(self) -> None:
        """On a demo workspace's first open (nothing queued or evaluated yet), say how to see every screen
        working: ``D`` queues the example pipeline. Said once per workspace."""
        from engine.demo_layout import is_demo_workspace
        from tui.preferences import load_preferences, remember

        if not is_demo_workspace(self.ws) or load_preferences(self.ws)["demo_offer_seen"]:
            return
        if self.ws.queue_db.exists() or any(self.ws.metrics_dir.glob("*.json")):
            return
        try:
            remember(self.ws, demo_offer_seen=True)
        except OSError:
            return  # a read-only workspace: no offer rather than one on every start
        self.call_from_thread(
            self.notify, "Press D to queue its example: evaluate tiny-qwen3, LoRA-train it on synthetic BoolQ "
            "(a few minutes on a CPU) and evaluate the result. Then watch Jobs (3) for progress and the loss "
            "plot, Results (4) for the numbers, space + c to compare, and chat with the models (5).",
            title="This is the demo workspace", timeout=30)

    def action_demo_pipeline(self) -> None:
        from engine.demo_layout import is_demo_workspace

        if not is_demo_workspace(self.ws):
            self.notify("D queues the example of a demo workspace (llmtui -w DIR demo builds one)",
                        severity="warning")
            return
        self.queue_demo_pipeline()

    @work(thread=True, exclusive=True, group="demo-offer", exit_on_error=False)
    def queue_demo_pipeline(self) -> None:
        import sqlite3

        from engine.jobs.enqueue import enqueue_demo_pipeline
        from engine.jobs.store import JobError

        try:
            jobs = enqueue_demo_pipeline(self.ws, inventory=self.gpu_inventory)
        except (JobError, sqlite3.Error, OSError) as exc:
            self.call_from_thread(self.notify, str(exc), title="not queued", severity="warning", timeout=10)
            return
        self.call_from_thread(self.clear_notifications)  # the offer, answered
        self.call_from_thread(self.jobs_queued, len(jobs), "the demo's example (evaluate, train, evaluate)")
        self.call_from_thread(self.switch_mode, "jobs")

    # ------------------------------------------------------------------------------ keys and commands

    def action_help(self) -> None:
        rows: list[tuple[str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for active in self.screen.active_bindings.values():
            binding = active.binding
            entry = (binding.key_display or self.get_key_display(binding), binding.description or binding.action)
            if entry in seen:
                continue
            seen.add(entry)
            scope = "app" if active.node is self else type(active.node).__name__
            rows.append((*entry, scope))
        screen_name = type(self.screen).__name__
        rows.sort(key=lambda row: (0 if row[2] == screen_name else 1 if row[2] == "app" else 2, row[2]))
        self.push_screen(HelpModal(rows, str(self.ws.root)))

    async def action_quit(self) -> None:
        unsaved = [text for screen in self._screens if (text := screen.unsaved_changes())]
        if not unsaved:
            self.exit()
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.exit()

        self.push_screen(ConfirmModal(f"Quit and lose {'; '.join(unsaved)}?", yes="Quit", no="Stay"), answered)

    def palette_commands(self) -> list[tuple[str, Callable[[], object], str]]:
        """(title, callback, help) for every action: screen switches, each screen's keys and commands."""
        commands: list[tuple[str, Callable[[], object], str]] = []
        for mode in MAIN_SCREENS:
            screen_cls = screen_class(mode)
            title = mode.capitalize()
            commands.append((f"Go to {title}", partial(self.switch_mode, mode), f"switch to the {mode} screen"))
            entries = [(b.description, b.action, f"key {b.key_display or b.key}") for b in _bindings(screen_cls)
                       if b.description]
            entries += list(screen_cls.PALETTE)
            for description, action, help_text in entries:
                commands.append((f"{title}: {description}", partial(self.run_on_screen, mode, action), help_text))
        commands.append(("Help: show every key", self.action_help, "key ?"))
        commands.append(("Demo: queue the example pipeline", self.action_demo_pipeline, "key D (demo workspaces)"))
        return commands

    async def run_on_screen(self, mode: str, action: str) -> None:
        """Switch to ``mode`` and run ``action`` there (for the command palette)."""
        await self.switch_mode(mode)
        await self.screen.run_action(action)


def _bindings(screen_cls: type[WorkspaceScreen]) -> list[Binding]:
    return [b for b in Binding.make_bindings(screen_cls.BINDINGS) if isinstance(b, Binding)]
