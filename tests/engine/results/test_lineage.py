"""The degradation matrix: lineage from training and quantization metadata, each cell's value, delta against
the row's parent and exact McNemar p-value (computed here from the outputs), and its exports and CLI."""

from __future__ import annotations

import json
import math

import pytest

from engine.results.export import lineage_latex, lineage_markdown
from engine.results.lineage import LineageError, descendants, lineage_matrix, parents
from engine.workspace import Workspace
from metrics_fixtures import boxed, write_evaluation
from test_power import make_model
from tui.cli.main import main

BOOLQ = "test-boolq.parquet"
ARC = "test-ai2_arc.parquet"
N = 30
GOLDS = [i % 2 == 0 for i in range(N)]
RIGHT = {
    "base": [i % 3 == 0 for i in range(N)],  # 10 right
    "tuned": [i % 10 != 0 for i in range(N)],  # 27 right
    "tuned-q4": [i % 10 != 0 and i != 7 for i in range(N)],  # 26 right: one flip against tuned
    "tuned-q2": [i % 2 == 0 for i in range(N)],  # 15 right
}


def exact_mcnemar(a: list[bool], b: list[bool]) -> float:
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    k, n = min(only_a, only_b), only_a + only_b
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@pytest.fixture
def lineage_ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws").init()
    make_model(ws, "base")
    make_model(ws, "tuned", base="base")
    make_model(ws, "tuned-q4", source="tuned")
    make_model(ws, "tuned-q2", source="tuned")
    make_model(ws, "tuned-q4-untested", source="tuned-q4")
    make_model(ws, "stranger")
    for name, right in RIGHT.items():
        write_evaluation(ws, name, {BOOLQ: [boxed(g if r else not g) for g, r in zip(GOLDS, right)]}, {BOOLQ: GOLDS})
    return ws


def test_lineage_order_from_metadata(lineage_ws):
    parent_of = parents(lineage_ws)
    assert parent_of == {"tuned": "base", "tuned-q4": "tuned", "tuned-q2": "tuned", "tuned-q4-untested": "tuned-q4"}
    assert descendants(parent_of, "base") == [("base", 0), ("tuned", 1), ("tuned-q2", 2), ("tuned-q4", 2),
                                              ("tuned-q4-untested", 3)]
    assert descendants({"a": "b", "b": "a"}, "a") == [("a", 0), ("b", 1)]  # a cycle stops


def test_matrix_cells_against_each_rows_parent(lineage_ws):
    matrix = lineage_matrix(lineage_ws, "base")
    assert matrix.columns == {"boolq": "accuracy"}
    rows = {row.model: row for row in matrix.rows}
    assert [row.model for row in matrix.rows] == ["base", "tuned", "tuned-q2", "tuned-q4", "tuned-q4-untested"]
    assert rows["base"].cells["boolq"].value == pytest.approx(10 / 30) and rows["base"].cells["boolq"].delta is None
    for child, parent in (("tuned", "base"), ("tuned-q2", "tuned"), ("tuned-q4", "tuned")):
        cell = rows[child].cells["boolq"]
        assert rows[child].parent == parent
        assert cell.value == pytest.approx(sum(RIGHT[child]) / N)
        assert cell.delta == pytest.approx((sum(RIGHT[child]) - sum(RIGHT[parent])) / N)
        assert cell.p_value == pytest.approx(exact_mcnemar(RIGHT[parent], RIGHT[child]))
        assert cell.significant == (cell.p_value < 0.05)
        assert cell.warnings == []
    assert rows["tuned"].cells["boolq"].significant and not rows["tuned-q4"].cells["boolq"].significant
    untested = rows["tuned-q4-untested"]
    assert not untested.tested and untested.cells["boolq"].value is None
    with pytest.raises(LineageError, match="did you mean"):
        lineage_matrix(lineage_ws, "tuned-q5")


def test_exports_and_cli(lineage_ws, capsys):
    matrix = lineage_matrix(lineage_ws, "tuned")
    markdown = lineage_markdown(matrix)
    p = exact_mcnemar(RIGHT["tuned"], RIGHT["tuned-q4"])
    assert f"| &nbsp;&nbsp;tuned-q4 | tuned | 0.8667 (-0.0333, p={p:.3f}) |" in markdown
    # Rows start at the model asked for; its own row is compared with its parent too.
    assert exact_mcnemar(RIGHT["base"], RIGHT["tuned"]) < 0.001
    assert markdown.split("\n")[2] == "| tuned | base | 0.9000 (+0.5667, p<0.001*) |"
    latex = lineage_latex(matrix)
    p = exact_mcnemar(RIGHT["tuned"], RIGHT["tuned-q2"])  # b = 15, c = 3: 2 * 988 / 2^18
    assert p == pytest.approx(0.00754, abs=1e-5)
    assert rf"\quad tuned-q2 & tuned & 0.5000 (-0.4000, p={p:.3f}$^{{*}}$) \\" in latex
    root = str(lineage_ws.root)
    assert main(["-w", root, "compare", "--lineage", "base", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in data["rows"]][:2] == ["base", "tuned"]
    assert data["rows"][1]["cells"]["boolq"]["p_value"] == pytest.approx(exact_mcnemar(RIGHT["base"], RIGHT["tuned"]))
    assert main(["-w", root, "compare", "--lineage", "tuned"]) == 0
    out = capsys.readouterr().out
    assert "lineage of tuned" in out and "tuned-q2" in out
    with pytest.raises(SystemExit):
        main(["-w", root, "compare", "--lineage", "tuned", "--csv"])
