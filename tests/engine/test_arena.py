"""engine.arena: item references, recorded predictions, one column's answer from the chat server's replies,
and where each server runs (the GPUs come from a fixed inventory: NVML cannot exist on this machine)."""

from __future__ import annotations

import pytest

from engine.arena import (ArenaColumn, ArenaError, Placement, column_json, load_arena_item, parse_item_ref, placements,
                          recorded_prediction, workspace_placements)
from engine.data.tasks import get_task
from engine.files import write_jsonl
from engine.jobs.gpu import GpuReading
from engine.jobs.store import JobStore
from fake_gpus import FakeInventory

GIB = 1 << 30


def test_item_references():
    assert parse_item_ref("boolq:42") == ("boolq", 42)
    assert parse_item_ref("test-boolq.parquet:0") == ("test-boolq.parquet", 0)
    for bad in ("boolq", "boolq:", ":3", "boolq:-1", "boolq:x"):
        with pytest.raises(ArenaError, match="expected TASK:INDEX"):
            parse_item_ref(bad)


def test_an_item_carries_the_evaluation_messages_and_each_models_recorded_row(demo_ws):
    write_jsonl(demo_ws.predictions_folder("a") / "test-boolq.jsonl",
                [{"index": i, "output": f"out {i}"} for i in range(5)])
    (demo_ws.predictions_folder("b")).mkdir(parents=True)
    (demo_ws.predictions_folder("b") / "test-boolq.jsonl").write_text("not json\n")
    item = load_arena_item(demo_ws, "boolq:3", ["a", "b", "c"])
    assert item.ref == "boolq:3" and item.task.name == "boolq"
    assert item.system == get_task("boolq").system_prompt
    assert item.messages == [{"role": "user", "content": f"{item.item.question}\n\nContext:\n{item.item.context}"}]
    assert item.recorded == {"a": {"index": 3, "output": "out 3"}, "b": None, "c": None}  # b's file is broken
    assert recorded_prediction(demo_ws, "a", item.task, 99) is None
    assert load_arena_item(demo_ws, "test-boolq.parquet:3", []).item == item.item  # a comparison's file name
    with pytest.raises(ArenaError, match="has 100 items"):
        load_arena_item(demo_ws, "boolq:100", [])


def test_a_column_follows_the_protocol_and_says_whether_it_reproduces_the_recorded_answer(demo_ws):
    item = load_arena_item(demo_ws, "boolq:0", [])
    gold = item.item.answer
    item.recorded = {"m": {"output": f"\\boxed{{{gold}}}"}}
    column = ArenaColumn("m")
    column.apply({"type": "ready", "kind": "full", "device": "cpu"})
    assert (column.state, column.kind, column.device) == ("ready", "full", "cpu")
    column.start_answer()
    for reply in ({"type": "prompt", "id": 1, "text": "P"}, {"type": "token", "id": 1, "text": "\\boxed{"},
                  {"type": "token", "id": 1, "text": f"{gold}}}"}):
        column.apply(reply)
    assert (column.prompt, column.text, column.finished) == ("P", f"\\boxed{{{gold}}}", False)
    column.apply({"type": "done", "id": 1, "text": f"\\boxed{{{gold}}}", "tokens": 6, "seconds": 0.5,
                  "first_token_s": 0.1, "stopped": False})
    assert column.finished and column.tokens_per_s == 12.0
    outcome = column.outcome(None, item, greedy=True)
    assert (outcome.extracted, outcome.correct, outcome.reproduces_recorded) == (str(gold), True, True)
    assert column.outcome(None, item, greedy=False).reproduces_recorded is None  # a sample proves nothing
    assert column_json(column, outcome, True) == {
        "model": "m", "text": f"\\boxed{{{gold}}}", "first_token_s": 0.1, "tokens_per_s": 12.0, "tokens": 6,
        "extracted": str(gold), "correct": True, "recorded": f"\\boxed{{{gold}}}", "reproduces_recorded": True}
    item.recorded = {"m": {"output": "something else"}}
    assert column.outcome(None, item, greedy=True).reproduces_recorded is False

    failed = ArenaColumn("x")
    failed.apply({"type": "error", "fatal": True, "message": "OSError: no weights"})
    failed.apply({"type": "exited", "code": 1, "stderr": "trace"})
    assert failed.finished and failed.error == "did not load: OSError: no weights"
    assert column_json(failed, failed.outcome(None, None, True), False)["error"] == failed.error


def test_servers_go_to_the_gpus_the_scheduler_would_give_or_share_the_cpu_cores():
    def gpu(index: int, used_gib: float) -> GpuReading:
        return GpuReading(index, "Fake", int(used_gib * GIB), 80 * GIB, 0.0, 30.0)

    visible = lambda placed: [p.env["CUDA_VISIBLE_DEVICES"] for p in placed]  # noqa: E731
    readings = [gpu(0, 0), gpu(1, 40), gpu(2, 0), gpu(3, 0)]
    # GPU 1 is filled by someone else and GPU 2 is held by a running job: the scheduler gives 0 and 3
    assert visible(placements(2, readings, [2], 0.1, 2)) == ["0", "3"]
    assert visible(placements(3, readings, [2], 0.1, 2)) == ["0", "3", "0"]  # more servers than free GPUs: shared
    assert visible(placements(2, readings, [0, 2, 3], 0.1, 2)) == ["0", "1"]  # none free: all shared
    assert all(p.device == "cuda" and p.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and p.threads is None
               for p in placements(2, readings, [], 0.1, 2))
    assert placements(2, [], [], 0.1, 16) == [Placement("cpu", 8)] * 2
    assert placements(3, [], [], 0.1, 2) == [Placement("cpu", 1)] * 3


def test_workspace_placements_skip_the_gpus_running_jobs_hold(demo_ws):
    with JobStore(demo_ws) as store:
        job = store.enqueue("eval", ["true"], target="x")
        store.claim(job.id, [0])
    placed = workspace_placements(demo_ws, 2, FakeInventory.with_gpus(3))
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in placed] == ["1", "2"]
