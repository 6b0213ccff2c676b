"""The app as a whole: keys help, command palette, screen switching, startup checks, no torch in the
TUI process, and the real ``llmtui`` in a terminal (tmux)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.jobs.store import JobStore
from tui.cli.main import main
from tui.cli.app import autostart_enabled
from tui.modals.help import HelpModal
from tui.screens.experiments import ExperimentsScreen
from tui.screens.jobs import JobsScreen
from tui.screens.models import ModelsScreen
from tui.screens.results import ResultsScreen
from tui_workspace import make_model, make_workspace, wait_for

REPO = Path(__file__).resolve().parents[2]


async def test_number_keys_switch_screens_and_help_lists_every_key(tmp_path, tui_app):
    ws = make_workspace(tmp_path / "ws")
    make_model(ws, "some-model")
    app = tui_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        for key, screen_type in (("2", ExperimentsScreen), ("3", JobsScreen), ("4", ResultsScreen),
                                 ("1", ModelsScreen)):
            await pilot.press(key)
            assert isinstance(app.screen, screen_type)
        await wait_for(pilot, lambda: app.screen.loaded, what="the models table")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpModal)
        rows = {(key, does) for key, does, _ in app.screen.rows}
        for expected in (("e", "Evaluate"), ("E", "Eval all untested"), ("/", "Filter"), ("1", "Models"),
                         ("4", "Results"), ("?", "Help"), ("q", "Quit"), ("r", "Refresh")):
            assert expected in rows
        await pilot.press("escape")
        assert isinstance(app.screen, ModelsScreen)
        await pilot.press("q")
    assert app.return_code == 0


async def test_the_command_palette_lists_every_action_and_runs_it_on_its_screen(tmp_path, tui_app):
    ws = make_workspace(tmp_path / "ws")
    make_model(ws, "some-model")
    app = tui_app(ws)
    titles = [title for title, _, _ in app.palette_commands()]
    for expected in ("Go to Jobs", "Models: Evaluate", "Models: Eval all untested", "Experiments: Save as",
                     "Experiments: Queue", "Experiments: Delete", "Jobs: Cancel job", "Jobs: Retry",
                     "Results: Compare", "Results: Export", "Results: Clear marks", "Help: show every key"):
        assert expected in titles
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.screen.loaded, what="the models table")
        await pilot.press("3", "ctrl+p", *"eval all untested")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, ws.queue_db.exists, what="the queue")
        assert isinstance(app.screen, ModelsScreen)  # the action ran on its own screen
        with JobStore(ws) as store:
            assert [(j.kind, j.target) for j in store.list()] == [("eval", "some-model")]


def test_llmtui_refuses_a_folder_that_is_not_a_workspace(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-w", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"{tmp_path} is not an llmtui workspace" in message
    assert "Datasets" in message and "llmtui -w" in message and "init" in message


def test_autostart_switch(monkeypatch):
    monkeypatch.delenv("LLMTUI_NO_AUTOSTART", raising=False)
    assert autostart_enabled()
    monkeypatch.setenv("LLMTUI_NO_AUTOSTART", "1")
    assert not autostart_enabled()
    monkeypatch.setenv("LLMTUI_NO_AUTOSTART", "0")
    assert autostart_enabled()


TUI_SESSION = """
import asyncio, json, sys
from pathlib import Path
from engine.workspace import Workspace
from tui.app import LlmTuiApp

async def until(pilot, condition, what):
    for _ in range(400):  # 20 s
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")

def screen_is(app, name):
    return type(app.screen).__name__ == name

async def visit_every_screen(root):
    app = LlmTuiApp(Workspace(Path(root)), autostart_worker=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: screen_is(app, "ModelsScreen") and app.screen.loaded and app.screen.rows,
                    "the models list")
        await pilot.press("enter")  # the first model's details (reads its metadata)
        await until(pilot, lambda: screen_is(app, "ModelDetailsModal") and app.screen.sections, "the details")
        await pilot.press("escape", "2")
        await until(pilot, lambda: screen_is(app, "ExperimentsScreen") and app.screen.info is not None
                    and "tiny-qwen3" in app.screen.info.models, "the experiments screen's workspace info")
        await pilot.press("3")
        await until(pilot, lambda: screen_is(app, "JobsScreen") and len(app.screen.query_one("#jobs").columns) > 0,
                    "the jobs table (filled by the queue poller)")
        await pilot.press("4")
        await until(pilot, lambda: screen_is(app, "ResultsScreen") and app.screen.table_data is not None,
                    "the results table")
        await pilot.press("5")  # the chat playground: its model runs in a child process
        await until(pilot, lambda: screen_is(app, "ChatScreen") and app.screen.tasks, "the chat screen's choices")
        app.screen.query_one("#chat-model").value = "tiny-qwen3"
        await until(pilot, lambda: app.screen.server is not None, "the chat server to start")

asyncio.run(visit_every_screen(sys.argv[1]))
heavy = sorted(m for m in ("torch", "transformers", "peft", "trl", "gptqmodel", "bitsandbytes", "hqq")
               if m in sys.modules)
print(json.dumps(heavy))
"""


def test_the_tui_process_never_imports_torch_or_transformers(demo_ws):
    # In a fresh interpreter: this test process has torch loaded already (the demo fixture built a model).
    result = subprocess.run([sys.executable, "-c", TUI_SESSION, str(demo_ws.root)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_real_llmtui_in_tmux_shows_the_models_table(demo_ws):
    socket = f"llmtui-test-{os.getpid()}"
    tmux = ["tmux", "-L", socket]
    command = f"LLMTUI_NO_AUTOSTART=1 {sys.executable} -m tui.cli -w {demo_ws.root}"
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", "-s", "llmtui", "-c", str(REPO), command],
                   check=True)
    try:
        deadline = time.monotonic() + 60
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "llmtui"], capture_output=True,
                                    text=True).stdout
            if "tiny-qwen3" in screen and "untested" in screen:
                break
            time.sleep(0.3)
        assert "tiny-qwen3" in screen and "untested" in screen, screen
        assert "1 Models" in screen and "4 Results" in screen
        subprocess.run([*tmux, "send-keys", "-t", "llmtui", "q"], check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alive = subprocess.run([*tmux, "has-session", "-t", "llmtui"], capture_output=True).returncode == 0
            if not alive:
                break
            time.sleep(0.2)
        assert not alive, "llmtui did not quit on q"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


async def test_opening_the_app_starts_a_worker_for_waiting_jobs(tmp_path, tui_app):
    from engine.jobs.worker import stop_worker, worker_pid

    ws = make_workspace(tmp_path / "ws")
    with JobStore(ws) as store:
        job = store.enqueue("eval", [sys.executable, "-c", "print('ran')"], target="x")  # a trivial command
    app = tui_app(ws, gpus=0, autostart_worker=True)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            with JobStore(ws) as store:
                await wait_for(pilot, lambda: store.require(job.id).status == "done", timeout=30,
                               what="the worker to run the waiting job")
        assert worker_pid(ws)  # closing the app leaves the worker running
    finally:
        stop_worker(ws)


async def test_the_footer_shows_every_shown_key_whole_at_80_columns(tmp_path, tui_app):
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    ws = make_workspace(tmp_path / "ws")
    make_model(ws, "some-model")
    app = tui_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("1", "2", "3", "4", "5", "ctrl+o"):  # ctrl+o: the Chat screen's Arena
            await pilot.press(key)
            await wait_for(pilot, lambda: app.screen.query(Footer), what="the screen")
            screen = app.screen
            screen.set_focus(None)  # a focused input adds no keys of its own to the footer anyway
            footer = screen.query_one(Footer)
            await pilot.pause()
            shown = {b.description for _, b, enabled, _ in screen.active_bindings.values()
                     if b.show and enabled} - {""}

            def keys() -> list[FooterKey]:
                return [k for k in footer.query(FooterKey) if not k.has_class("-command-palette")]

            await wait_for(pilot, lambda: {k.description for k in keys()} >= shown
                           and all(k.region.width > 0 for k in footer.query(FooterKey)),
                           what=f"{type(screen).__name__}'s footer with {sorted(shown)}")
            palette = footer.query(".-command-palette")
            limit = palette.first().region.x if palette else footer.region.right
            assert shown
            for footer_key in keys():
                assert footer_key.region.width > 0 and footer_key.region.right <= limit, \
                    (type(screen).__name__, footer_key.description, footer_key.region, limit)
        assert type(app.screen).__name__ == "ArenaScreen"


async def test_a_demo_workspace_offers_its_example_once_and_d_queues_it(demo_ws, tui_app):
    from engine.demo_layout import DEMO_BASE

    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: any("Press D" in n.message for n in app._notifications),
                       what="the demo offer")
        offer = next(n.message for n in app._notifications if "Press D" in n.message)
        assert "800 training steps: about 1 minute on 2 idle CPU cores, several times that when other work" in offer
        await pilot.press("D")
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), what="the Jobs screen")
        with JobStore(demo_ws) as store:
            jobs = store.list()
        name = "tiny-qwen3-boolq_SFT_LoRa16_NoQuant"
        assert sorted((j.kind, j.target) for j in jobs) == [("eval", DEMO_BASE), ("eval", name), ("train", name)]
        await pilot.press("D")  # queued already: said, not queued twice
        await pilot.pause(0.5)
        with JobStore(demo_ws) as store:
            assert len(store.list()) == 3

    reopened = tui_app(demo_ws)  # the offer is made once per workspace
    async with reopened.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.5)
        assert not any("Press D" in n.message for n in reopened._notifications)
