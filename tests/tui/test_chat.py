"""The Chat screen with the demo model in a real ``llmtui chat-server`` child process: it loads, answers
a message as a stream, shows the rendered prompt, ends the process on leaving; a folder that is not a
model shows the load error. Also the engine's protocol (``engine.runs.chat.serve``) in-process."""

from __future__ import annotations

import io
import json
import os

import pytest
from textual.widgets import Input, Select

from tui_workspace import wait_for
from tui.screens.chat import ChatScreen
from tui.screens.models import ModelsScreen

#: Loading torch and the model in a child process on a busy 2-core machine.
LOAD_TIMEOUT_S = 180


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie not yet reaped counts as gone
        return stat.read().split(")")[-1].split()[0] == "Z"


@pytest.mark.slow
async def test_the_playground_answers_with_the_demo_model_and_ends_its_process_on_leave(demo_ws, monkeypatch, tui_app):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child's torch: one thread on a shared machine
    app = tui_app(demo_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        await wait_for(pilot, lambda: "tiny-qwen3" in [v for _, v in screen.query_one("#chat-model", Select)._options],
                       what="the model list")
        screen.query_one("#chat-task", Select).value = "boolq"  # its system prompt
        screen.query_one("#chat-model", Select).value = "tiny-qwen3"
        await wait_for(pilot, lambda: screen.server is not None, what="the server to start")
        pid = screen.server.pid
        await wait_for(pilot, lambda: screen.ready, timeout=LOAD_TIMEOUT_S, what="the model to load")
        assert "tiny-qwen3 (full, cpu) ready, loaded in " in str(screen.query_one("#chat-state").render())

        box = screen.query_one("#chat-input", Input)
        box.focus()
        screen.query_one("#chat-max-tokens", Input).value = "12"
        await pilot.press(*"is the cup red", "enter")
        await wait_for(pilot, lambda: screen.answering is None and len(screen.turns) == 2, timeout=60,
                       what="the answer")
        you, model = screen.turns
        assert (you.role, you.text, model.role) == ("user", "is the cup red", "assistant")
        assert model.text and model.note.startswith("12 tokens")  # greedy, stopped at max tokens
        assert model.text in str(model.widget.render())

        await pilot.press("ctrl+t")
        prompt = str(screen.query_one("#chat-prompt").render())
        assert "Read the passage and answer the question with True or False" in prompt  # boolq's system prompt
        assert "User: is the cup red" in prompt and prompt.rstrip().endswith("Assistant:")

        await pilot.press("escape", "1")  # leave the message box, then the screen
        assert isinstance(app.screen, ModelsScreen)
        await wait_for(pilot, lambda: _gone(pid), timeout=15, what="the chat server to end")


async def test_a_folder_that_is_not_a_model_shows_the_error(demo_ws, tui_app):
    (demo_ws.models_dir / "not-a-model").mkdir()
    (demo_ws.models_dir / "not-a-model" / "README.txt").write_text("no weights here")
    app = tui_app(demo_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        screen = app.screen
        await wait_for(pilot, lambda: "not-a-model" in [v for _, v in screen.query_one("#chat-model", Select)._options],
                       what="the model list")
        screen.query_one("#chat-model", Select).value = "not-a-model"
        await wait_for(pilot, lambda: screen.load_failed, timeout=LOAD_TIMEOUT_S, what="the load error")
        state = str(screen.query_one("#chat-state").render())
        assert "✗ not-a-model did not load" in state and "not-a-model" in state
        assert screen.server is None and app.is_running  # no crash


def test_the_protocol_renders_streams_and_reports_bad_requests(demo_ws):
    from engine.runs.chat import serve

    requests = io.StringIO("\n".join(json.dumps(r) for r in [
        {"type": "generate", "id": 1, "messages": [{"role": "user", "content": "hello"}], "system": "Be brief.",
         "max_new_tokens": 5},
        {"type": "render", "id": 2, "messages": [{"role": "user", "content": "x"}]},
        {"type": "generate", "id": 3, "messages": [{"role": "assistant", "content": "x"}]},
        {"type": "generate", "id": 4, "messages": [{"role": "user", "content": "x"}], "temperature": -1},
        *({"type": "generate", "id": 5 + i, "messages": [{"role": "user", "content": "x"}], "temperature": 1.0,
           "seed": seed, "max_new_tokens": 8} for i, seed in enumerate((7, 7, 8))),
    ]) + "\nnot json\n")
    replies = io.StringIO()
    assert serve(demo_ws.model_dir("tiny-qwen3"), device="cpu", requests=requests, replies=replies) == 0
    out = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert out[0]["type"] == "ready" and out[0]["kind"] == "full"
    first = [r for r in out if r.get("id") == 1]
    assert first[0] == {"type": "prompt", "id": 1, "text": "System: Be brief.\nUser: hello\nAssistant:"}
    tokens = [r["text"] for r in first if r["type"] == "token"]
    done = first[-1]
    assert done["type"] == "done" and done["tokens"] == 5 and "".join(tokens) == done["text"] and tokens
    assert [r for r in out if r.get("id") == 2] == [{"type": "prompt", "id": 2, "text": "User: x\nAssistant:"}]
    assert [r["message"] for r in out if r.get("id") == 3] == ["messages: the last turn must be the user's"]
    assert [r["message"] for r in out if r.get("id") == 4] == ["temperature: -1 is outside 0.0..10.0"]
    assert done["first_token_s"] is not None and 0 <= done["first_token_s"] <= done["seconds"]
    sampled = [next(r["text"] for r in out if r.get("id") == i and r["type"] == "done") for i in (5, 6, 7)]
    assert sampled[0] == sampled[1] != sampled[2]  # the same seed draws the same answer (the Arena's columns)
    assert out[-1]["type"] == "error" and out[-1]["message"].startswith("not JSON")


def test_llmtui_chat_in_the_terminal(demo_ws, capsys):
    from tui.cli.main import main

    assert main(["-w", str(demo_ws.root), "chat", "tiny-qwen3", "--task", "arc", "--show-prompt",
                 "--max-tokens", "4", "-m", "which is a mammal"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("> which is a mammal\n") and len(captured.out.splitlines()) == 2
    assert "Answer the multiple-choice question" in captured.err and "User: which is a mammal" in captured.err
