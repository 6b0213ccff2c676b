"""The Studies view (Pilot): opened from Experiments on a study file; progress, Pareto rows, adjusted p-values,
``enter`` on a cell → the paired comparison on its flipped items, and the frontier plot (at 80×24)."""

from __future__ import annotations

from textual.widgets import DataTable, OptionList, Static

from metrics_fixtures import boxed, write_evaluation
from study_files import study_text
from tui_workspace import make_model, make_workspace, wait_for
from tui.screens.compare import CompareScreen
from tui.screens.study import PARETO_MARK, StudyScreen, frontier_points

BOOLQ = "test-boolq.parquet"
GOLDS = [i % 2 == 0 for i in range(40)]
STUDY = study_text("tiny-base", '"peft.method" = ["LoRa", "DoRa", "VeRa"]\n')
LORA, DORA, VERA = (f"tiny-base-boolq_SFT_{m}16_NoQuant" for m in ("LoRa", "DoRa", "VeRa"))


def study_workspace(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    base = ws.model_dir("tiny-base")
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "qwen3"}')
    (base / "weights.bin").write_bytes(b"x" * 4000)
    for name, size in ((LORA, 1000), (DORA, 2000), (VERA, 500)):
        make_model(ws, name, base="Models/tiny-base")
        (ws.model_dir(name) / "weights.bin").write_bytes(b"x" * size)
    skill = {"tiny-base": 0.5, LORA: 0.95, DORA: 0.6}  # VeRA is not evaluated: its cell says why
    for name, share in skill.items():
        right = [i < share * len(GOLDS) for i in range(len(GOLDS))]
        write_evaluation(ws, name, {BOOLQ: [boxed(g if r else not g) for g, r in zip(GOLDS, right)]}, {BOOLQ: GOLDS})
    (ws.experiments_dir / "grid.toml").write_text(STUDY)
    return ws


async def test_the_studies_view_shows_progress_pareto_rows_and_opens_flips_and_the_frontier(tmp_path, tui_app):
    ws = study_workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        presets = app.screen.query_one("#presets", OptionList)
        await wait_for(pilot, lambda: presets.option_count == 1, what="the study in the list")
        assert "(study)" in str(presets.get_option_at_index(0).prompt)
        presets.focus()
        presets.highlighted = 0
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, StudyScreen) and app.screen.table is not None,
                       timeout=20, what="the study table")
        view = app.screen
        title = str(view.query_one("#study-title", Static).render())
        assert "done 6 / running 0 / queued 0 / failed 0 of 7 jobs, 1 not queued" in title
        table = view.query_one("#study-table", DataTable)
        assert table.row_count == 4
        marks = {name: str(table.get_row(name)[0]) for name in ("tiny-base", LORA, DORA, VERA)}
        # LoRA is best and smaller than the base and DoRA: on the frontier; DoRA is dominated by LoRA.
        assert marks[LORA] == PARETO_MARK and marks[DORA] == ""
        lora = view.table.row(LORA).cells["boolq"]
        assert lora.p_adjusted is not None and lora.p_adjusted >= lora.p
        assert f"p={lora.p_adjusted:.3g}" in str(table.get_row(LORA)[3])
        assert str(table.get_row(VERA)[3]) == "not run"
        table.focus()
        table.cursor_coordinate = (table.get_row_index(LORA), 3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison is not None,
                       timeout=20, what="the comparison")
        compare = app.screen
        assert compare.models == ["tiny-base", LORA]
        await wait_for(pilot, lambda: compare.showing_flips, what="the flipped items")
        await pilot.press("escape", "escape")
        assert app.screen is view
        await pilot.press("g")
        assert view.query_one("#study-plot").display and not table.display
        points, front = frontier_points(view.table)
        assert {name for *_, name in points} == {"tiny-base", LORA, DORA}
        assert front and max(y for _, y in front) == 0.95
        assert all(view.table.row(name).pareto_size == ((x, y) in front) for x, y, name in points)
