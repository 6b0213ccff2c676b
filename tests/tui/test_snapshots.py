"""Snapshots of the main views at 80×24 and 120×40 (``pytest --snapshot-update`` re-records them).

Everything shown is fixed: the workspace folder is always called ``ws``, model metadata and metrics
are written with fixed dates and values, the app's clock is pinned, and the GPUs come from a fake
inventory (NVML cannot exist on this machine).
"""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, OptionList, Select

from engine.jobs.gpu import GpuReading
from engine.jobs.store import JobStore
from metrics_fixtures import boxed, write_evaluation
from tui_workspace import make_model, make_workspace, wait_for
from tui.screens.compare import CompareScreen
from fake_gpus import FakeInventory
from tui.screens.lineage import LineageScreen

GIB = 1 << 30
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
PRESET = """[model]
base = "Models/tiny-qwen3"

[data]
dataset = "boolq"

[peft]
method = "LoRa"
r = 16

[train]
max_steps = 200

[eval]
after = true
datasets = ["boolq"]
"""


def _inventory() -> FakeInventory:
    return FakeInventory([GpuReading(0, "Fake A100 80GB", 31 * GIB, 80 * GIB, 87.0, 64.0),
                          GpuReading(1, "Fake A100 80GB", 1 * GIB, 80 * GIB, 0.0, 35.0)])


def _evaluated_workspace(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    golds = {"test-boolq.parquet": [True, False] * 10, "test-ai2_arc.parquet": list("ABCD") * 5}
    for name, every in (("Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant", 3), ("Qwen3-0.6B-boolq_SFT_NoPeft_NoQuant", 6)):
        make_model(ws, name, peft="LoRa" if "LoRa" in name else "NoPeft")
        outputs = {file: [boxed(g if i % every else {True: "False", False: "True"}.get(g, "D" if g != "D" else "A"))
                          for i, g in enumerate(values)] for file, values in golds.items()}
        write_evaluation(ws, name, outputs, golds)
    make_model(ws, "Qwen3-0.6B-arc_SFT_LoRa64_NoQuant", dataset="arc", r=64)
    make_model(ws, "Qwen3-0.6B-squad_SFT_DoRa32_NoQuant", dataset="squad", peft="DoRa", r=32)
    (ws.models_dir / "half-copied-model").mkdir()
    with JobStore(ws) as store:
        store.enqueue("eval", ["true"], target="Qwen3-0.6B-arc_SFT_LoRa64_NoQuant")
    return ws


def _app(tui_app, ws, clock=lambda: 1_800_000_000.0):
    return tui_app(ws, gpu_inventory=_inventory(), clock=clock)


@pytest.mark.parametrize("size", SIZES)
def test_models_list(snap_compare, tmp_path, size, tui_app):
    app = _app(tui_app, _evaluated_workspace(tmp_path))

    async def loaded(pilot):
        await wait_for(pilot, lambda: app.screen.loaded, what="the models table")

    assert snap_compare(app, terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("size", SIZES)
def test_form_with_an_error(snap_compare, tmp_path, size, tui_app):
    ws = make_workspace(tmp_path / "ws")
    (ws.experiments_dir / "boolq-lora.toml").write_text(PRESET)

    async def type_r_zero(pilot):
        await pilot.press("2")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.saved_values is not None, what="the preset in the form")
        r = screen.query_one("#f-peft-r", Input)
        r.focus()
        await pilot.press("end", "ctrl+u", "0")
        screen.query_one("#form").scroll_to_widget(r, animate=False, top=True)
        screen.query_one("#presets", OptionList).focus()  # no blinking cursor in the picture
        await pilot.pause()

    assert snap_compare(_app(tui_app, ws), terminal_size=size, run_before=type_r_zero)


@pytest.mark.parametrize("size", SIZES)
def test_jobs_with_a_log(snap_compare, tmp_path, size, tui_app):
    ws = make_workspace(tmp_path / "ws")
    with JobStore(ws) as store:
        done = store.enqueue("eval", ["true"], target="Qwen3-0.6B-base", description="evaluate the base model")
        store.claim(done.id, [1])
        store.finish(done.id, 0)
        job = store.enqueue("train", ["true"], target="Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant",
                            description="SFT LoRa on boolq → Models/Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant")
        store.enqueue("eval", ["true"], target="Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant", after=(job.id,))
        store.claim(job.id, [0])
        started = store.require(job.id).started_at
    job_dir = ws.job_dir(job.id)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "log.txt").write_text("".join(f"{{'loss': {2.0 / (i + 1):.4f}, 'step': {10 * (i + 1)}}}\n"
                                             for i in range(30)))
    events = [{"t": started + 1, "kind": "start"}]
    events += [{"t": started + 2 + 2 * i, "kind": "train_step", "step": 10 * (i + 1), "max_steps": 600,
                "loss": 2.0 / (i + 1) + 0.1 * (i % 3), "learning_rate": 5e-3, "tokens_per_s": 1840.0,
                "epoch": 0.05 * (i + 1), "gpu_mem_gb": 30.9} for i in range(30)]
    events += [{"t": started + 3 + 20 * i, "kind": "eval", "step": 100 * (i + 1), "max_steps": 600,
                "eval_loss": 0.4 + 0.5 / (i + 1)} for i in range(3)]
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    app = _app(tui_app, ws, clock=lambda: started + 65.0)

    async def showing_the_log(pilot):
        await pilot.press("3")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: job.id in screen.views, what="the jobs")
        # the running job is highlighted on first look (newest first: the waiting eval is on top)
        await wait_for(pilot, lambda: screen.selected_id == job.id and screen.views[job.id].done == 300
                       and screen.query_one("#job-log").line_count == 30, what="the log and the progress")
        await wait_for(pilot, lambda: f"#{job.id} train" in str(screen.query_one("#gpu-panel").render()),
                       what="the GPU panel")

    assert snap_compare(app, terminal_size=size, run_before=showing_the_log)


@pytest.mark.parametrize("size", SIZES)
def test_compare_view(snap_compare, tmp_path, size, tui_app):
    app = _app(tui_app, _evaluated_workspace(tmp_path))

    async def comparing(pilot):
        await pilot.press("4")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.table_data is not None, what="the results")
        await pilot.press("space", "down", "space", "c")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                       and pilot.app.screen.comparison is not None, timeout=20, what="the comparison")
        pilot.app.clear_notifications()  # the broken-folder notice times out by the clock: flaky in a picture
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=comparing)


@pytest.mark.parametrize("size", SIZES)
def test_results_chart(snap_compare, tmp_path, size, tui_app):
    app = _app(tui_app, _evaluated_workspace(tmp_path))

    async def charting(pilot):
        await pilot.press("4")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.table_data is not None, what="the results")
        await pilot.press("space", "down", "space", "percent_sign", "g")
        await wait_for(pilot, lambda: screen.query_one("#results-chart").drawn, what="the chart")
        pilot.app.clear_notifications()  # the broken-folder notice from the Models screen hides the chart
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=charting)


@pytest.mark.parametrize("size", SIZES)
def test_chat_screen(snap_compare, tmp_path, size, tui_app):
    """The layout of a conversation: no model loads in a snapshot, so the screen is given the chat server's
    protocol replies (engine.runs.chat) directly, as its reader thread would hand them over."""
    ws = make_workspace(tmp_path / "ws")
    make_model(ws, "Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant")

    async def chatting(pilot):
        await pilot.press("5")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.tasks, what="the choices")
        screen.query_one("#chat-task").value = "boolq"
        screen.model = "Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant"
        with screen.prevent(Select.Changed):  # shown as chosen, without starting a server
            screen.query_one("#chat-model").value = screen.model
        screen.handle_reply({"type": "ready", "model": screen.model, "kind": "full", "device": "cuda:0",
                             "template": True}, None)
        screen._add_turn("user", "is the sky blue")
        screen.answering = 1
        screen._add_turn("assistant", "")
        prompt = ("<|im_start|>system\nRead the passage and answer the question with True or False inside "
                  "\\boxed{}.<|im_end|>\n<|im_start|>user\nis the sky blue<|im_end|>\n<|im_start|>assistant\n")
        for reply in ({"type": "prompt", "id": 1, "text": prompt}, {"type": "token", "id": 1, "text": "\\boxed{"},
                      {"type": "token", "id": 1, "text": "True}"},
                      {"type": "done", "id": 1, "text": "\\boxed{True}", "tokens": 4, "seconds": 0.21, "stopped": False}):
            screen.handle_reply(reply, None)
        await pilot.press("ctrl+t")
        screen.set_focus(None)  # no blinking cursor in the picture
        await pilot.pause()

    assert snap_compare(_app(tui_app, ws), terminal_size=size, run_before=chatting)


@pytest.mark.parametrize("size", SIZES)
def test_compare_flips_panel(snap_compare, tmp_path, size, tui_app):
    app = _app(tui_app, _evaluated_workspace(tmp_path))

    async def flipped(pilot):
        await pilot.press("4")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.table_data is not None, what="the results")
        await pilot.press("space", "down", "space", "c")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                       and pilot.app.screen.comparison is not None, timeout=20, what="the comparison")
        await pilot.press("f", "n")

    assert snap_compare(app, terminal_size=size, run_before=flipped)


@pytest.mark.parametrize("size", SIZES)
def test_lineage_view(snap_compare, tmp_path, size, tui_app):
    ws = _evaluated_workspace(tmp_path)
    quantized = ws.model_dir("Qwen3-0.6B-boolq_SFT_LoRa16_HQQ_w4")
    quantized.mkdir()
    (quantized / "config.json").write_text('{"model_type": "qwen3"}')
    (quantized / "quantization_metadata.json").write_text(json.dumps(
        {"method": "HQQ", "quant_tag": "HQQ_w4", "source_model": "Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant"}))
    golds = [True, False] * 10
    write_evaluation(ws, quantized.name, {"test-boolq.parquet": [boxed(not g if i % 2 == 0 else g)
                                                                 for i, g in enumerate(golds)]},
                     {"test-boolq.parquet": golds})
    untested = ws.model_dir("Qwen3-0.6B-boolq_SFT_NoPeft_HQQ_w2")
    untested.mkdir()
    (untested / "config.json").write_text('{"model_type": "qwen3"}')
    (untested / "quantization_metadata.json").write_text(json.dumps(
        {"method": "HQQ", "quant_tag": "HQQ_w2", "source_model": "Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant"}))
    app = _app(tui_app, ws)

    async def lineage(pilot):
        await pilot.press("4")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.table_data is not None, what="the results")
        await pilot.press("down", "l")  # Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant: two PTQ variants
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, LineageScreen)
                       and pilot.app.screen.matrix is not None, timeout=20, what="the lineage")

    assert snap_compare(app, terminal_size=size, run_before=lineage)
