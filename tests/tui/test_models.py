"""Models screen flows: the table, queueing evaluation with ``e`` and ``E``, filter, details, refresh."""

from __future__ import annotations

import shutil

from textual.widgets import DataTable

from engine.files import write_json
from engine.jobs.store import JobStore
from tui_workspace import make_model, make_workspace, wait_for
from tui.modals.model_details import ModelDetailsModal
from tui.screens.models import ModelsScreen


def _status(screen: ModelsScreen, name: str) -> str:
    table = screen.query_one("#models", DataTable)
    return str(table.get_cell(name, "status"))


def _workspace(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    make_model(ws, "alpha-boolq_SFT_LoRa16_NoQuant")
    make_model(ws, "beta-arc_SFT_NoPeft_NoQuant", dataset="arc", peft="NoPeft")
    make_model(ws, "gamma-squad_SFT_LoRa8_NoQuant", dataset="squad", r=8)
    tested = make_model(ws, "delta-boolq_SFT_LoRa16_NoQuant")
    write_json(ws.metrics_file(tested.name), {"model_name": tested.name, "datasets": {
        "test-boolq.parquet": {"type": "boolq", "accuracy": 0.8125, "metrics": {"accuracy": 0.8125}}}})
    (ws.models_dir / "broken-folder").mkdir()  # no config.json: not a loadable model
    return ws


async def test_table_lists_every_model_with_status_and_headline(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_for(pilot, lambda: screen.loaded, what="the models table")
        table = screen.query_one("#models", DataTable)
        assert [str(r.key.value) for r in table.ordered_rows] == [
            "alpha-boolq_SFT_LoRa16_NoQuant", "beta-arc_SFT_NoPeft_NoQuant", "broken-folder",
            "delta-boolq_SFT_LoRa16_NoQuant", "gamma-squad_SFT_LoRa8_NoQuant"]
        assert _status(screen, "delta-boolq_SFT_LoRa16_NoQuant") == "tested"
        assert _status(screen, "alpha-boolq_SFT_LoRa16_NoQuant") == "untested"
        assert _status(screen, "broken-folder") == "broken"
        assert str(table.get_cell("delta-boolq_SFT_LoRa16_NoQuant", "set:test-boolq.parquet:accuracy")) == "0.812"
        assert str(table.get_cell("gamma-squad_SFT_LoRa8_NoQuant", "peft")) == "LoRa8"
        assert str(table.get_cell("alpha-boolq_SFT_LoRa16_NoQuant", "params")) == "752M"
        assert any("broken-folder: neither config.json nor adapter_config.json" in n.message for n in app._notifications)


async def test_e_queues_evaluation_of_the_highlighted_model(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded, what="the models table")
        await pilot.press("e")  # the cursor is on the first row
        await wait_for(pilot, lambda: ws.queue_db.exists(), what="the queue")
        with JobStore(ws) as store:
            jobs = store.list()
        assert [(j.kind, j.target, j.status) for j in jobs] == [("eval", "alpha-boolq_SFT_LoRa16_NoQuant", "queued")]
        assert jobs[0].command[-2:] == ["eval", str(ws.model_dir("alpha-boolq_SFT_LoRa16_NoQuant"))]
        assert jobs[0].gpus_requested == 1  # the fake inventory has one GPU
        await wait_for(pilot, lambda: _status(screen, "alpha-boolq_SFT_LoRa16_NoQuant") == "queued",
                       what="the row to show the queued job")
        await pilot.press("e")  # already queued: nothing more is queued, and the screen says why
        await wait_for(pilot, lambda: any(n.message == "alpha-boolq_SFT_LoRa16_NoQuant is already queued"
                                          for n in app._notifications), what="the 'already queued' notice")
        with JobStore(ws) as store:
            assert len(store.list()) == 1


async def test_E_queues_evaluation_of_all_untested_models(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded, what="the models table")
        await pilot.press("E")
        await wait_for(pilot, lambda: ws.queue_db.exists(), what="the queue")
        with JobStore(ws) as store:
            targets = sorted(j.target for j in store.list() if j.kind == "eval")
        # tested and broken models are left out
        assert targets == ["alpha-boolq_SFT_LoRa16_NoQuant", "beta-arc_SFT_NoPeft_NoQuant",
                           "gamma-squad_SFT_LoRa8_NoQuant"]
        await wait_for(pilot, lambda: _status(screen, "gamma-squad_SFT_LoRa8_NoQuant") == "queued",
                       what="queued statuses")
        assert _status(screen, "delta-boolq_SFT_LoRa16_NoQuant") == "tested"


async def test_filter_details_and_automatic_refresh(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded, what="the models table")
        table = screen.query_one("#models", DataTable)
        await pilot.press("slash", *"arc", "enter")
        assert [str(r.key.value) for r in table.ordered_rows] == ["beta-arc_SFT_NoPeft_NoQuant"]
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelDetailsModal), what="the details")
        details = app.screen
        await wait_for(pilot, lambda: details.sections, what="the detail sections")
        assert [title for title, _ in details.sections] == [
            "model", "training: model", "training: stats", "training: hardware", "training: preset", "files"]
        assert dict(details.sections[2][1])["final_loss"] == "0.25"
        assert [name for name, _ in details.sections[-1][1]] == ["config.json", "training_metadata.json"]
        assert len(details.query(".details-section")) == 6
        await pilot.press("escape")
        await pilot.press("escape")  # clears the filter
        assert table.row_count == 5
        # a new folder and a new metrics file appear without any key press
        shutil.copytree(ws.model_dir("alpha-boolq_SFT_LoRa16_NoQuant"), ws.models_dir / "zeta-new")
        write_json(ws.metrics_file("alpha-boolq_SFT_LoRa16_NoQuant"), {"datasets": {}})
        await wait_for(pilot, lambda: table.row_count == 6, what="the new model to appear")
        await wait_for(pilot, lambda: _status(screen, "alpha-boolq_SFT_LoRa16_NoQuant") == "tested",
                       what="the new metrics file")


async def test_corrupt_metadata_is_a_broken_row_not_a_crash(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    (ws.model_dir("alpha-boolq_SFT_LoRa16_NoQuant") / "training_metadata.json").write_text("{not json")
    app = tui_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded, what="the models table")
        assert _status(screen, "alpha-boolq_SFT_LoRa16_NoQuant") == "broken"
        await pilot.press("e")  # a broken model is not queued, and the screen says why
        await wait_for(pilot, lambda: any(n.message.startswith("cannot evaluate alpha-boolq_SFT_LoRa16_NoQuant: ")
                                          and "training_metadata.json" in n.message for n in app._notifications),
                       what="the 'cannot evaluate' notice")
        assert not ws.queue_db.exists()
