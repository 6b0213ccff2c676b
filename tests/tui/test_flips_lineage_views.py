"""The compare view's flipped-items panel and comparability markers, and the Results screen's lineage view
(Pilot flows; expected values computed from the outputs written)."""

from __future__ import annotations

import json

from textual.widgets import DataTable, Static

from engine.files import write_json
from metrics_fixtures import PROVENANCE, boxed, write_evaluation
from tui_workspace import make_model, make_workspace, wait_for
from tui.screens.compare import CompareScreen
from tui.screens.lineage import LineageScreen

BOOLQ = "test-boolq.parquet"
GOLDS = [i % 2 == 0 for i in range(12)]
RIGHT = {"a-base": [i % 3 != 0 for i in range(12)], "b-tuned": [i % 4 != 0 for i in range(12)]}


def flips_workspace(tmp_path, *, extractor_b: int = 1):
    ws = make_workspace(tmp_path / "ws")
    make_model(ws, "a-base")
    make_model(ws, "b-tuned", base="Models/a-base")
    folder = ws.model_dir("b-tuned-q4")
    folder.mkdir()
    write_json(folder / "config.json", {"model_type": "qwen3"})
    write_json(folder / "quantization_metadata.json", {"method": "HQQ", "quant_tag": "HQQ_w4", "source_model": "b-tuned"})
    for name, right in RIGHT.items():
        outputs = [f"reasoning of {name} {boxed(g if r else not g)}" for g, r in zip(GOLDS, right)]
        provenance = dict(PROVENANCE, extractor_version=extractor_b if name == "b-tuned" else 1)
        write_evaluation(ws, name, {BOOLQ: outputs}, {BOOLQ: GOLDS}, provenance=provenance)
    return ws


async def open_compare(app, pilot) -> CompareScreen:
    await pilot.press("4")
    results = app.screen
    await wait_for(pilot, lambda: results.table_data is not None, what="the results")
    await pilot.press("space", "down", "space", "c")
    await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison is not None,
                   timeout=20, what="the comparison")
    return app.screen


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_flips_panel_pages_through_both_directions_at_80x24(tmp_path, tui_app):
    ws = flips_workspace(tmp_path)
    only_a = [i for i in range(12) if RIGHT["a-base"][i] and not RIGHT["b-tuned"][i]]
    only_b = [i for i in range(12) if RIGHT["b-tuned"][i] and not RIGHT["a-base"][i]]
    app = tui_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        view = await open_compare(app, pilot)
        assert not view.query_one("#flips").display
        await pilot.press("f")
        assert view.query_one("#flips").display and not view.query_one("#compare-main").display
        seen = []
        for _ in range(len(only_a) + len(only_b)):
            head = text_of(view, "#flips-head")
            assert head.startswith(f"Flipped {len(seen) + 1}/{len(only_a) + len(only_b)} (n/p) · boolq 1/1 (t)")
            seen.append(int(text_of(view, "#flips-item").split()[0].lstrip("#")))
            index = seen[-1]
            left, right = text_of(view, "#flips-reference"), text_of(view, "#flips-model")
            assert left.startswith("a-base") and right.startswith("b-tuned")
            assert f"reasoning of a-base {boxed(GOLDS[index] if RIGHT['a-base'][index] else not GOLDS[index])}" in left
            assert f"reasoning of b-tuned {boxed(GOLDS[index] if RIGHT['b-tuned'][index] else not GOLDS[index])}" in right
            await pilot.press("n")
        assert seen == only_a + only_b
        await pilot.press("p")
        assert text_of(view, "#flips-item").startswith(f"#{only_b[-1]}")
        await pilot.press("escape")  # closes the panel first
        assert view.query_one("#compare-main").display and app.screen is view
        await pilot.press("escape")
        assert app.screen is not view


async def test_rows_of_a_set_with_a_guard_warning_are_marked(tmp_path, tui_app):
    app = tui_app(flips_workspace(tmp_path, extractor_b=2))
    async with app.run_test(size=(120, 40)) as pilot:
        view = await open_compare(app, pilot)
        table = view.query_one("#compare", DataTable)
        sets = {str(table.get_row_at(i)[0]) for i in range(table.row_count)}
        assert sets == {"⚠ boolq"}
        assert "answer extraction differs: extractor_version 1 vs 2" in text_of(view, "#compare-notes")


async def test_lineage_view_of_the_highlighted_model(tmp_path, tui_app):
    app = tui_app(flips_workspace(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        results = app.screen
        await wait_for(pilot, lambda: results.table_data is not None, what="the results")
        await pilot.press("l")  # a-base is highlighted (first row)
        await wait_for(pilot, lambda: isinstance(app.screen, LineageScreen) and app.screen.matrix is not None,
                       timeout=20, what="the lineage")
        view = app.screen
        table = view.query_one("#lineage", DataTable)
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        accuracy = {name: sum(right) / 12 for name, right in RIGHT.items()}
        assert rows[0] == ["a-base", f"{accuracy['a-base']:.4f}", "Qwen3-0.6B"]  # its base: not in this workspace
        delta = accuracy["b-tuned"] - accuracy["a-base"]
        assert rows[1][0] == "  b-tuned" and rows[1][2] == "a-base"
        assert rows[1][1].startswith(f"{accuracy['b-tuned']:.4f} ({delta:+.4f}, p=")
        assert rows[2] == ["    b-tuned-q4 (untested)", "–", "b-tuned"]
        await pilot.press("escape")
        assert app.screen is results


async def test_results_table_shows_lm_eval_tasks_beside_llmtui_ones(tmp_path, tui_app):
    from pathlib import Path

    from engine.results.lmeval import import_output

    ws = flips_workspace(tmp_path)
    recorded = Path(__file__).parents[1] / "engine" / "results" / "lm_eval_output"
    import_output(ws, recorded)
    app = tui_app(ws)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("4")
        results = app.screen
        await wait_for(pilot, lambda: results.table_data is not None, what="the results")
        table = results.query_one("#results", DataTable)
        labels = {str(c.key.value): str(c.label) for c in table.columns.values()}
        assert labels["lm-eval:tinycolors__acc"] == "lm:tinycolors acc"
        assert labels["boolq__accuracy"].startswith("boolq acc")
        value = json.loads(next(recorded.glob("*tiny-qwen3/results_*.json")).read_text())
        assert str(table.get_cell("tiny-qwen3", "lm-eval:tinycolors__acc")) == \
            f"{value['results']['tinycolors']['acc,none']:.3f}"
        assert str(table.get_cell("a-base", "lm-eval:tinycolors__acc")) == "-"
