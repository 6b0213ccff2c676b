"""The Arena with two tiny models (the demo's and one built with other random weights) in real
``llmtui chat-server`` children: both columns stream, ``ctrl+t`` shows each column's prompt, a flipped item
opens with the evaluation prompt and the recorded predictions, a model that does not load shows its error
while the other answers, and leaving ends every child (checked by pid). The app runs with no GPU in its
inventory (``gpus=0``), so the children share this machine's CPU cores."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Static

from engine.files import write_jsonl
from tui_workspace import open_compare, wait_for
from tui.screens.arena import ArenaScreen
from tui.screens.chat import ChatScreen

#: Loading torch and a model in each of two children on a busy 2-core machine.
LOAD_TIMEOUT_S = 240
OTHER = "tiny-other"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie not yet reaped counts as gone
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def arena_ws(demo_ws):
    """The demo workspace plus a second tiny model: the same tokenizer, other random weights."""
    from engine.data.synthetic import corpus_for_tokenizer
    from engine.runs.tiny import build_tiny_model

    build_tiny_model(demo_ws.models_dir / OTHER, corpus_for_tokenizer(demo_ws.datasets_dir), seed=1)
    return demo_ws


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def open_arena(app, pilot, models: list[str]) -> ArenaScreen:
    await pilot.press("5")
    assert isinstance(app.screen, ChatScreen)
    await pilot.press("ctrl+o")
    arena = app.screen
    assert isinstance(arena, ArenaScreen)
    await wait_for(pilot, lambda: OTHER in [v for _, v in arena.query_one("#arena-model-0")._options],
                   what="the model list")
    for i, model in enumerate(models):
        arena.query_one(f"#arena-model-{i}").value = model
        await pilot.pause()
    return arena


@pytest.mark.slow
async def test_two_models_stream_side_by_side_and_leaving_ends_both(arena_ws, monkeypatch, tui_app):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = tui_app(arena_ws, gpus=0)
    async with app.run_test(size=(100, 30)) as pilot:
        arena = await open_arena(app, pilot, ["tiny-qwen3", OTHER])
        await wait_for(pilot, lambda: arena.servers is not None and len(arena.servers.pids) == 2,
                       what="two servers")
        pids = arena.servers.pids
        assert len(set(pids)) == 2
        arena.query_one("#arena-task").value = "boolq"
        arena.query_one("#arena-max-tokens", Input).value = "12"
        arena.query_one("#arena-input", Input).focus()
        await wait_for(pilot, lambda: all(c.state == "ready" for c in arena.columns), timeout=LOAD_TIMEOUT_S,
                       what="both models to load")
        await pilot.press(*"is the cup red", "enter")
        await wait_for(pilot, lambda: all(c.state == "done" for c in arena.columns), timeout=120,
                       what="both answers")
        for i, column in enumerate(arena.columns):
            assert column.tokens == 12 and column.text and column.first_token_s is not None
            assert column.tokens_per_s and column.tokens_per_s > 0
            foot = text_of(arena, f"#arena-foot-{i}")
            assert f"{column.tokens_per_s} tok/s · 12 tokens" in foot and "no boxed answer" in foot  # boolq's extractor
            assert column.text in text_of(arena, f"#arena-body-{i}")
        assert arena.columns[0].text != arena.columns[1].text  # two different models

        assert not arena.query_one("#arena-prompt-0").display
        await pilot.press("ctrl+t")
        for i in range(2):
            prompt = text_of(arena, f"#arena-prompt-{i}")
            assert arena.query_one(f"#arena-prompt-{i}").display
            assert prompt == arena.columns[i].prompt
            assert "Read the passage and answer the question with True or False" in prompt
            assert prompt.rstrip().endswith("User: is the cup red\nAssistant:")

        await pilot.press("escape", "escape")  # leave the box, then the Arena
        assert isinstance(app.screen, ChatScreen)
        for pid in pids:
            await wait_for(pilot, lambda pid=pid: _gone(pid), timeout=15, what=f"server {pid} to end")


@pytest.mark.slow
async def test_a_model_that_does_not_load_shows_its_error_while_the_other_answers(arena_ws, monkeypatch, tui_app):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (arena_ws.models_dir / "broken").mkdir()
    (arena_ws.models_dir / "broken" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    app = tui_app(arena_ws, gpus=0)
    async with app.run_test(size=(80, 24)) as pilot:
        arena = await open_arena(app, pilot, ["broken", "tiny-qwen3"])
        arena.query_one("#arena-max-tokens", Input).value = "6"
        arena.query_one("#arena-input", Input).focus()
        await pilot.press(*"hello", "enter")  # asked while loading: each column gets it once loaded
        await wait_for(pilot, lambda: arena.columns[0].state == "failed" and arena.columns[1].state == "done",
                       timeout=LOAD_TIMEOUT_S, what="the failure and the answer")
        assert "✗ failed" in text_of(arena, "#arena-head-0")
        assert "did not load" in text_of(arena, "#arena-body-0")
        assert arena.columns[1].tokens == 6 and arena.columns[1].text in text_of(arena, "#arena-body-1")
        pids = arena.servers.pids
        await pilot.press("escape", "1")  # leave the box; switching screens ends the servers too
        for pid in pids:
            await wait_for(pilot, lambda pid=pid: _gone(pid), timeout=15, what=f"server {pid} to end")
        assert app.is_running


@pytest.mark.slow
async def test_a_flipped_item_opens_in_the_arena_with_its_prompt_and_recorded_predictions(arena_ws, monkeypatch,
                                                                                          tui_app):
    """The two models' predictions on the first items of the demo's BoolQ test set are planted so that item 3
    flips; tiny-qwen3's recorded output is its real greedy answer (computed here in-process), the other's is
    not, so one column reproduces and the other is flagged."""
    from engine.arena import load_arena_item
    from engine.data.prompts import render_prompt
    from engine.runs.chat import ChatSession, ChatSettings
    from metrics_fixtures import boxed, write_evaluation

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    item = load_arena_item(arena_ws, "boolq:3", [])
    session = ChatSession(arena_ws.model_dir("tiny-qwen3"), device="cpu")
    real, _, _ = session.generate(render_prompt(session.loaded.tokenizer, item.task, item.item),
                                  ChatSettings(max_new_tokens=item.task.max_new_tokens), lambda _: None)
    golds = [load_arena_item(arena_ws, f"boolq:{i}", []).item.answer for i in range(6)]
    right = [boxed(g) for g in golds]
    wrong = [boxed(not g) for g in golds]
    write_evaluation(arena_ws, "tiny-qwen3", {"test-boolq.parquet": wrong[:3] + right[3:]},
                     {"test-boolq.parquet": golds})
    write_evaluation(arena_ws, OTHER, {"test-boolq.parquet": wrong}, {"test-boolq.parquet": golds})
    path = arena_ws.predictions_folder("tiny-qwen3") / "test-boolq.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["output"] = real  # scored as right above; the text is what the model says
    write_jsonl(path, rows)

    app = tui_app(arena_ws, gpus=0)
    async with app.run_test(size=(80, 24)) as pilot:
        compare = await open_compare(app, pilot, timeout=30)
        await pilot.press("f")
        assert text_of(compare, "#flips-item").startswith("#3")
        await pilot.press("a")
        arena = app.screen
        assert isinstance(arena, ArenaScreen)
        await wait_for(pilot, lambda: arena.item is not None and len(arena.columns) == 2, what="the item")
        assert sorted(c.model for c in arena.columns) == sorted(["tiny-qwen3", OTHER])
        assert arena.query_one("#arena-task").value == "boolq"
        assert text_of(arena, "#arena-state").startswith("boolq:3 gold ")
        await wait_for(pilot, lambda: all(c.state == "done" for c in arena.columns), timeout=LOAD_TIMEOUT_S,
                       what="both answers to the item")
        await pilot.press("ctrl+t")
        for i, column in enumerate(arena.columns):
            expected = render_prompt(session.loaded.tokenizer, item.task, item.item)
            assert column.prompt == expected == text_of(arena, f"#arena-prompt-{i}")  # the evaluation prompt
            foot = text_of(arena, f"#arena-foot-{i}")
            assert "recorded: answer" in foot
            if column.model == "tiny-qwen3":
                assert column.text == real and "= reproduces the recorded prediction" in foot
                assert real[:40] in foot
            else:
                assert f"recorded: answer {not golds[3]} ✗" in foot
                assert "≠ differs from the recorded prediction" in foot
        pids = arena.servers.pids
        await pilot.press("escape", "escape")  # leave the message box, then the Arena: back on the flipped item
        assert app.screen is compare and compare.showing_flips
        for pid in pids:
            await wait_for(pilot, lambda pid=pid: _gone(pid), timeout=15, what=f"server {pid} to end")
