"""``llmtui chat A B --item boolq:3 --json``: both models answer the test item in their own server processes,
each beside its recorded prediction; a planted recorded prediction that differs from the fresh greedy answer
is marked, one that equals it is not. Bad input gets a one-line error and exit 2."""

from __future__ import annotations

import json

import pytest

from engine.files import write_jsonl
from tui.cli.main import main

OTHER = "tiny-other"


@pytest.fixture
def two_models(demo_ws):
    from engine.data.synthetic import corpus_for_tokenizer
    from engine.runs.tiny import build_tiny_model

    build_tiny_model(demo_ws.models_dir / OTHER, corpus_for_tokenizer(demo_ws.datasets_dir), seed=1)
    return demo_ws


def plant(ws, model: str, output: str, correct: bool) -> None:
    """A predictions file whose row for item 3 recorded ``output``."""
    write_jsonl(ws.predictions_folder(model) / "test-boolq.jsonl",
                [{"index": i, "prompt": "p", "output": output if i == 3 else "x", "extracted": None, "pred": None,
                  "gold": True, "correct": correct if i == 3 else False} for i in range(5)])


@pytest.mark.slow
def test_the_arena_answers_an_item_and_marks_an_answer_that_differs_from_the_recorded_one(two_models, capsys,
                                                                                          monkeypatch):
    from engine.arena import load_arena_item
    from engine.data.prompts import render_prompt
    from engine.runs.chat import ChatSession, ChatSettings

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    item = load_arena_item(two_models, "boolq:3", [])
    session = ChatSession(two_models.model_dir("tiny-qwen3"), device="cpu")
    real, tokens, _ = session.generate(render_prompt(session.loaded.tokenizer, item.task, item.item),
                                       ChatSettings(max_new_tokens=item.task.max_new_tokens), lambda _: None)
    plant(two_models, "tiny-qwen3", real, False)
    plant(two_models, OTHER, "The answer is \\boxed{True}", True)  # not what a random tiny model says

    assert main(["-w", str(two_models.root), "chat", "tiny-qwen3", OTHER, "--item", "boolq:3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in results] == ["tiny-qwen3", OTHER]
    for r in results:
        assert set(r) >= {"model", "text", "first_token_s", "tokens_per_s", "tokens", "extracted", "recorded",
                          "reproduces_recorded"}
        assert r["text"] and r["tokens"] and r["tokens_per_s"] > 0 and r["first_token_s"] is not None
        assert r["correct"] is False  # neither random model writes a box
    mine, other = results
    assert (mine["text"], mine["tokens"], mine["recorded"], mine["reproduces_recorded"]) == (real, tokens, real, True)
    assert other["recorded"] == "The answer is \\boxed{True}" and other["reproduces_recorded"] is False
    assert other["text"] != mine["text"]


def test_bad_arena_input_is_one_line_and_exit_2(demo_ws, capsys):
    root = str(demo_ws.root)
    for argv, message in (
        (["chat", "tiny-qwen3", "tiny-qwen3", "tiny-qwen3", "tiny-qwen3", "-m", "x"], "at most 3 models"),
        (["chat", "tiny-qwen3", "tiny-qwen3"], "give one -m MESSAGE, or --item TASK:INDEX"),
        (["chat", "tiny-qwen3", "tiny-qwen3", "--item", "boolq"], "expected TASK:INDEX"),
        (["chat", "tiny-qwen3", "tiny-qwen3", "--item", "boolq:100000"], "the boolq test set has 100 items"),
        (["chat", "tiny-qwen3", "tiny-qwen3", "--item", "nope:1"], "unknown dataset 'nope'"),
        (["chat", "tiny-qwen3", "tiny-qwen3", "-m", "x"], "a model appears twice"),
        (["chat", "tiny-qwen3", "missing", "-m", "x"], "missing"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["-w", root, *argv])
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


@pytest.mark.slow
def test_side_by_side_in_a_plain_terminal_with_a_model_that_does_not_load(two_models, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from tui.cli.common import console

    monkeypatch.setattr(console, "_width", 240)  # three columns of stats, each on one line
    (two_models.models_dir / "broken").mkdir()
    (two_models.models_dir / "broken" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    assert main(["-w", str(two_models.root), "chat", "tiny-qwen3", "broken", OTHER, "-m", "hello", "--task", "arc",
                 "--max-tokens", "4"]) == 0  # one model answered
    out = capsys.readouterr().out
    for name in ("tiny-qwen3", "broken", OTHER):
        assert name in out
    assert out.count("· 4 tokens") == 2 and out.count("no boxed answer ✗") == 0  # a message, not an item: no gold
    assert out.count("no boxed answer") == 2 and "did not load" in out and "no answer" in out
