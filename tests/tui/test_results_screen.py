"""Results screen flows: the table, sorting, marking two results, the side-by-side comparison, export."""

from __future__ import annotations

from textual.widgets import DataTable

from engine.results import export
from engine.results.compare import compare
from engine.results.metrics_files import results_table
from metrics_fixtures import boxed, write_evaluation
from tui_workspace import make_model, make_workspace, wait_for
from tui.modals.export import ExportModal
from tui.screens.compare import CompareScreen
from tui.screens.results import ResultsScreen, display_number

BOOLQ = "test-boolq.parquet"
ARC = "test-ai2_arc.parquet"


def _workspace(tmp_path):
    """Three evaluated models with predictions (so the paired tests can run) and one broken file."""
    ws = make_workspace(tmp_path / "ws")
    golds = {BOOLQ: [True, False] * 20, ARC: list("ABCD") * 10}
    for name, every, peak in (("base-model", 3, 5.0), ("good-model", 8, 4.0), ("weak-model", 2, 6.0)):
        make_model(ws, name, train_peak_gb=peak)
        outputs = {file: [boxed(gold if i % every else ("True" if gold is False else "False" if gold is True else
                                                          "D" if gold != "D" else "A"))
                          for i, gold in enumerate(values)] for file, values in golds.items()}
        write_evaluation(ws, name, outputs, golds)
    (ws.metrics_dir / "garbage.json").write_text("{oops")
    return ws


async def _open(app, pilot) -> ResultsScreen:
    await pilot.press("4")
    screen = app.screen
    assert isinstance(screen, ResultsScreen)
    await wait_for(pilot, lambda: screen.table_data is not None, what="the results table")
    return screen


def _models(screen) -> list[str]:
    return [str(row.key.value) for row in screen.query_one("#results", DataTable).ordered_rows]


async def test_rows_columns_sorting_and_the_unreadable_file(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(140, 30)) as pilot:
        screen = await _open(app, pilot)
        table = screen.query_one("#results", DataTable)
        assert _models(screen) == ["base-model", "garbage", "good-model", "weak-model"]
        assert str(table.get_cell("garbage", "model")) == "✗ garbage"  # the unreadable file: a broken row
        keys = [str(c.value) for c in table.columns]
        assert keys[:6] == ["mark", "model", "ai2_arc__macro_f1", "ai2_arc__accuracy", "boolq__accuracy",
                            "boolq__mcc"]
        assert "train_peak_vram_allocated_gb" in keys
        assert str(table.get_cell("good-model", "train_peak_vram_allocated_gb")) == "4.000"
        assert str(table.get_cell("weak-model", "boolq__accuracy")) == "0.500"
        assert any("garbage.json" in n.message for n in app._notifications)  # reported, not a crash

        await pilot.press("s")  # next column: ARC macro-F1, best first
        assert screen.order.key == "ai2_arc__macro_f1" and screen.order.reverse
        assert _models(screen) == ["good-model", "base-model", "weak-model", "garbage"]  # missing values last
        mark_width, model_width = 3, len("base-model") + 2  # cells have one space of padding each side
        await pilot.click("#results", offset=(mark_width + model_width + 2, 0))  # the same header: reversed
        assert (screen.order.key, screen.order.reverse) == ("ai2_arc__macro_f1", False)
        assert _models(screen) == ["weak-model", "base-model", "good-model", "garbage"]
        await pilot.click("#results", offset=(mark_width + 2, 0))  # the model header
        assert (screen.order.key, screen.order.reverse) == ("model", False)
        assert _models(screen) == ["base-model", "garbage", "good-model", "weak-model"]


async def test_mark_two_results_and_compare_them_side_by_side(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open(app, pilot)
        await pilot.press("down", "down", "space", "up", "up", "space")  # good-model first: the reference
        assert screen.marked == ["good-model", "base-model"]
        assert str(screen.query_one("#results", DataTable).get_cell("good-model", "mark")) == "●"
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="the compare screen")
        view = app.screen
        await wait_for(pilot, lambda: view.comparison is not None, timeout=20, what="the comparison")
        table = view.query_one("#compare", DataTable)
        headers = [str(c.label) for c in table.columns.values()]
        assert headers == ["set", "metric", "good", "base", "Δ", "95% CI / b,c", "p"]  # shared "-model" dropped
        expected = compare(ws, ["good-model", "base-model"])
        assert view.comparison.to_dict() == expected.to_dict()
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        boolq_accuracy = next(r for r in rows if r[:2] == ["boolq", "accuracy"])
        metric = next(m for d in expected.datasets if d.name == "boolq" for m in d.metrics if m.metric == "accuracy")
        pair = metric.pairs[0]
        assert boolq_accuracy[4] == f"{pair.delta:+.4f}" and boolq_accuracy[5] == export.format_interval(pair)
        assert boolq_accuracy[5].startswith(f"b={pair.b}, c={pair.c}")
        await pilot.press("escape")
        assert app.screen is screen


async def test_export_writes_the_table_in_the_shown_order(tmp_path, tui_app):
    ws = _workspace(tmp_path)
    app = tui_app(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await _open(app, pilot)
        await pilot.press("s")  # sorted by ARC macro-F1, best first
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportModal), what="the export dialog")
        await pilot.press("enter")  # CSV to Testing/results.csv
        target = ws.testing_dir / "results.csv"
        await wait_for(pilot, target.exists, what="the export")
        table = results_table(ws)
        order = ["good-model", "base-model", "weak-model"]
        table.rows.sort(key=lambda row: order.index(row["model"]))
        assert target.read_text() == export.results_csv(table)

        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportModal), what="the export dialog")
        await pilot.press("ctrl+u", *"../outside.csv", "enter")  # refused: outside the workspace
        assert isinstance(app.screen, ExportModal)
        assert not (tmp_path / "outside.csv").exists()
        await pilot.press("escape")


async def test_percent_toggle_is_remembered_and_the_chart_draws_the_marked_models(tmp_path, tui_app):
    from textual_plotext import PlotextPlot

    from tui.widgets.metrics_chart import MetricsChart

    ws = _workspace(tmp_path)
    expected = {row["model"]: row for row in results_table(ws).rows}
    app = tui_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(app, pilot)
        table = screen.query_one("#results", DataTable)
        good = expected["good-model"]["boolq__accuracy"]
        assert str(table.get_cell("good-model", "boolq__accuracy")) == f"{good:.3f}"
        await pilot.press("percent_sign")
        assert str(table.get_cell("good-model", "boolq__accuracy")) == f"{good * 100:.1f}"
        assert display_number("boolq__mcc", 0.5, True) == "0.500"  # a correlation, never a percentage
        await wait_for(pilot, lambda: '"results_percent": true' in (ws.state_dir / "tui.json").read_text()
                       if (ws.state_dir / "tui.json").exists() else False, what="the unit remembered")

        table.move_cursor(row=_models(screen).index("good-model"))
        await pilot.press("space")
        table.move_cursor(row=_models(screen).index("weak-model"))
        await pilot.press("space", "g")
        chart = screen.query_one("#results-chart", MetricsChart)
        await pilot.pause()
        models, sets, values, percent = chart.drawn
        assert models == ("good-model", "weak-model") and percent
        assert sets == (("ai2_arc__macro_f1", "arc F1"), ("boolq__accuracy", "boolq acc"))
        assert dict(values)["weak-model"] == (("ai2_arc__macro_f1", expected["weak-model"]["ai2_arc__macro_f1"]),
                                              ("boolq__accuracy", expected["weak-model"]["boolq__accuracy"]))
        drawn = str(chart.query_one("#chart-plot", PlotextPlot).render())
        assert "arc F1" in drawn and "boolq acc" in drawn and "100" in drawn and "█" in drawn
        legend = str(chart.query_one("#chart-legend").render())
        assert "good-model" in legend and "weak-model" in legend

    reopened = tui_app(ws)  # the unit is remembered for this workspace
    async with reopened.run_test(size=(80, 24)) as pilot:
        screen = await _open(reopened, pilot)
        assert screen.percent
        assert str(screen.query_one("#results", DataTable).get_cell("good-model", "boolq__accuracy")) == \
            f"{good * 100:.1f}"


async def test_lm_eval_results_are_charted_by_their_acc(tmp_path, tui_app):
    """Bug: the Results screen took ``{task}__accuracy`` as an lm-eval task's headline; lm-eval calls it ``acc``
    (the one headline rule, engine.data.kinds.headline_metric, is used here as in lineage and the model scan)."""
    import shutil
    from pathlib import Path

    ws = _workspace(tmp_path)
    recorded = Path(__file__).parents[1] / "engine" / "results" / "lm_eval_output"  # real lm-eval output
    shutil.copytree(recorded, ws.lm_eval_dir, dirs_exist_ok=True)
    expected = {row["model"]: row for row in results_table(ws).rows}
    app = tui_app(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open(app, pilot)
        assert screen.headlines["lm-eval:tinycolors"] == "lm-eval:tinycolors__acc"
        table = screen.query_one("#results", DataTable)
        table.move_cursor(row=_models(screen).index("tiny-qwen3"))
        await pilot.press("space", "g")
        await pilot.pause()
        models, sets, values, _ = screen.query_one("#results-chart").drawn
        assert models == ("tiny-qwen3",)
        assert ("lm-eval:tinycolors__acc", "lm-eval:ti acc") in sets
        assert dict(dict(values)["tiny-qwen3"])["lm-eval:tinycolors__acc"] == \
            expected["tiny-qwen3"]["lm-eval:tinycolors__acc"] is not None
