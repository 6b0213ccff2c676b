"""engine.results.compare with engine.results.item_metrics: paired statistics from predictions files, refusals,
unavailable statistics for old-script files, and the comparison exports and CLI."""

from __future__ import annotations

import csv
import io
import json
import random

import numpy as np
import pytest

from engine.files import write_json, write_jsonl
from engine.results.compare import CompareError, compare
from engine.results.export import comparison_csv, comparison_json, comparison_latex, comparison_markdown
from engine.results.item_metrics import PAIRED_TESTS, item_arrays
from engine.results.scoring import compute_metrics, score_item
from engine.workspace import Workspace
from metrics_fixtures import KIND_BY_FILE, boxed, legacy_metrics, write_evaluation
from tui.cli.main import main

BOOLQ = "test-boolq.parquet"
SQUAD = "test-squad_v2.parquet"
MATH = "test-OpenMathInstruct-2.parquet"
ARC = "test-ai2_arc.parquet"
LEGACY_NAME = "Qwen3-8B-openmath_SFT_LoRa256_QLORA_w4_headbf16"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws").init()


def boolq_outputs(golds: list[bool], right: list[bool]) -> list[str]:
    return [boxed(g if ok else not g) for g, ok in zip(golds, right)]


def write_boolq_pair(ws: Workspace, right_a: list[bool], right_b: list[bool]) -> list[bool]:
    golds = [i % 2 == 0 for i in range(len(right_a))]
    write_evaluation(ws, "base", {BOOLQ: boolq_outputs(golds, right_a)}, {BOOLQ: golds})
    write_evaluation(ws, "tuned", {BOOLQ: boolq_outputs(golds, right_b)}, {BOOLQ: golds})
    return golds


def pair_of(comparison, metric: str, dataset: str = "boolq", model: str | None = None):
    found = next(d for d in comparison.datasets if d.name == dataset)
    row = next(m for m in found.metrics if m.metric == metric)
    return row, next(p for p in row.pairs if model is None or p.model == model)


# --- McNemar from predictions files ---------------------------------------------------------------

def test_mcnemar_on_predictions_hand_computed(ws):
    # 20 items: 12 both right, 1 only base right (b), 6 only tuned right (c), 1 both wrong.
    right_a = [True] * 12 + [True] + [False] * 6 + [False]
    right_b = [True] * 12 + [False] + [True] * 6 + [False]
    write_boolq_pair(ws, right_a, right_b)
    comparison = compare(ws, ["base", "tuned"])
    row, pair = pair_of(comparison, "accuracy")
    assert row.values == {"base": 0.65, "tuned": 0.9}
    assert (pair.test, pair.b, pair.c, pair.n) == ("mcnemar", 1, 6, 20)
    assert pair.p_value == pytest.approx(0.125)  # 2 * (1 + 7) / 2^7
    assert pair.significant is False
    assert pair.delta == pytest.approx(0.25) and pair.paired_delta == pytest.approx(0.25)
    assert pair.ci_low is None and pair.unavailable is None


def test_mcnemar_significant_difference(ws):
    right_a = [True] * 4 + [False] * 8 + [True] * 8
    right_b = [True] * 20
    write_boolq_pair(ws, right_a, right_b)
    _, pair = pair_of(compare(ws, ["base", "tuned"]), "accuracy")
    assert (pair.b, pair.c) == (0, 8)
    assert pair.p_value == pytest.approx(2 / 256) and pair.significant is True


def test_bootstrap_metrics_get_intervals_and_are_deterministic(ws):
    rng = random.Random(4)
    right_a = [rng.random() < 0.6 for _ in range(120)]
    right_b = [ok or rng.random() < 0.5 for ok in right_a]  # tuned fixes about half the errors
    write_boolq_pair(ws, right_a, right_b)
    first = compare(ws, ["base", "tuned"], resamples=2000, seed=11)
    again = compare(ws, ["base", "tuned"], resamples=2000, seed=11)
    other = compare(ws, ["base", "tuned"], resamples=2000, seed=12)
    for metric in ("f1", "macro_f1", "mcc", "balanced_accuracy"):
        row, pair = pair_of(first, metric)
        assert pair.test == "bootstrap" and pair.n == 120
        assert pair.delta == pytest.approx(row.values["tuned"] - row.values["base"])
        assert pair.paired_delta == pytest.approx(pair.delta)  # predictions reproduce the files
        assert pair.ci_low < pair.delta < pair.ci_high
        assert pair.significant == (pair.p_value < 0.05)
        assert pair_of(again, metric)[1] == pair
        assert (pair_of(other, metric)[1].ci_low, pair_of(other, metric)[1].ci_high) != (pair.ci_low, pair.ci_high)


def test_bootstrap_certain_difference_on_squad(ws):
    golds = ["Paris", "", "blue whale", "1912", "", "Ada Lovelace"] * 5
    wrong = [boxed("nonsense words") for _ in golds]
    right = [boxed(g or "unanswerable") for g in golds]
    write_evaluation(ws, "base", {SQUAD: wrong}, {SQUAD: golds})
    write_evaluation(ws, "tuned", {SQUAD: right}, {SQUAD: golds})
    comparison = compare(ws, ["base", "tuned"])
    for metric in ("EM", "F1", "HasAns_EM", "HasAns_F1"):
        _, pair = pair_of(comparison, metric, "squad_v2")
        assert (pair.delta, pair.ci_low, pair.ci_high) == (1.0, 1.0, 1.0), metric
        assert pair.p_value == pytest.approx(1 / 1001) and pair.significant
    _, no_answer = pair_of(comparison, "NoAns_accuracy", "squad_v2")  # McNemar on the 10 unanswerable
    assert (no_answer.test, no_answer.b, no_answer.c, no_answer.n) == ("mcnemar", 0, 10, 10)
    assert no_answer.p_value == pytest.approx(2 / 1024)
    _, avna = pair_of(comparison, "AvNA", "squad_v2")
    assert (avna.b, avna.c, avna.n) == (0, 10, 30)  # base answered the unanswerable ones


def test_format_success_rate_is_tested_from_has_box(ws):
    golds = [True, False] * 10
    boxed_a = [boxed(g) if i % 5 else "True, I think" for i, g in enumerate(golds)]  # 4 without a box
    write_evaluation(ws, "base", {BOOLQ: boxed_a}, {BOOLQ: golds})
    write_evaluation(ws, "tuned", {BOOLQ: [boxed(g) for g in golds]}, {BOOLQ: golds})
    _, pair = pair_of(compare(ws, ["base", "tuned"]), "format_success_rate")
    assert (pair.test, pair.b, pair.c, pair.p_value) == ("mcnemar", 0, 4, 0.125)
    path = ws.predictions_folder("tuned") / "test-boolq.jsonl"
    write_jsonl(path, [{k: v for k, v in json.loads(line).items() if k != "has_box"}
                       for line in path.read_text().splitlines()])
    _, without = pair_of(compare(ws, ["base", "tuned"]), "format_success_rate")
    assert without.unavailable == "cannot be tested: the predictions have no per-item has_box field"
    _, accuracy = pair_of(compare(ws, ["base", "tuned"]), "accuracy")
    assert accuracy.p_value == 0.125  # the other tests still run


def test_math_abs_diff_bootstrap_lower_is_better(ws):
    golds = [float(i) for i in range(1, 41)]
    write_evaluation(ws, "base", {MATH: [boxed(g + 3) for g in golds]}, {MATH: golds})
    write_evaluation(ws, "tuned", {MATH: [boxed(g + 1) if i % 4 else boxed("no idea") for i, g in enumerate(golds)]},
                     {MATH: golds})
    row, pair = pair_of(compare(ws, ["base", "tuned"]), "avg_abs_diff", "OpenMathInstruct-2")
    assert row.direction == "lower"
    assert row.values == {"base": 3.0, "tuned": 1.0}
    assert (pair.delta, pair.ci_low, pair.ci_high) == (-2.0, -2.0, -2.0)


@pytest.mark.parametrize("file_name", [ARC, BOOLQ, SQUAD, MATH])
def test_batch_metrics_match_engine_metrics(file_name):
    """The vectorised metrics used for resampling give the metrics files' values on the full sample."""
    kind = KIND_BY_FILE[file_name]
    rng = random.Random(7)
    choices = {
        "mcq4": (lambda: rng.choice("ABCD"), lambda g: rng.choice(["A", "B", "C", "D", "E", "?"]) if rng.random() < 0.5 else g),
        "boolq": (lambda: rng.random() < 0.5, lambda g: rng.choice([True, False, "maybe"])),
        "squad_v2": (lambda: rng.choice(["the Eiffel tower", "", "Marie Curie", "1848"]),
                     lambda g: rng.choice([g, "", "Curie", "tower", "unanswerable", "something else"])),
        "math_numeric": (lambda: float(rng.randint(-50, 50)),
                         lambda g: rng.choice([g, g + rng.randint(1, 9), "n/a", f"{int(g)}/2"])),
    }[kind]
    golds = [choices[0]() for _ in range(300)]
    outputs = [boxed(choices[1](g)) if rng.random() > 0.1 else "no box" for g in golds]
    scores = [score_item(kind, text, gold) for text, gold in zip(outputs, golds)]
    expected = compute_metrics(kind, scores)
    expected.setdefault("accuracy", sum(s.correct for s in scores) / len(scores))  # dataset level
    expected["format_success_rate"] = sum(s.has_box for s in scores) / len(scores)
    rows = [{"index": i, "pred": s.pred, "gold": gold, "correct": s.correct, "has_box": s.has_box,
             **({"f1": s.f1} if kind == "squad_v2" else {})} for i, (s, gold) in enumerate(zip(scores, golds))]
    items = item_arrays(kind, rows)
    whole = {name: values[None, :] for name, values in items.items()}
    for metric, test in PAIRED_TESTS[kind].items():
        if test.test == "bootstrap":
            assert test.metric(whole)[0] == pytest.approx(expected[metric]), metric
        else:
            correct, subset = test.correctness(items)
            value = np.mean(correct if subset is None else correct[subset])
            assert value == pytest.approx(expected[metric]), metric


# --- refusals and unavailable statistics -------------------------------------------------------------

def test_refuses_statistics_when_prompts_differ(ws):
    golds = [True, False] * 10
    write_evaluation(ws, "base", {BOOLQ: boolq_outputs(golds, [True] * 20)}, {BOOLQ: golds})
    prompts = [f"{BOOLQ} question {i}" for i in range(20)]
    prompts[3] = "a different question"
    write_evaluation(ws, "tuned", {BOOLQ: boolq_outputs(golds, [True] * 20)}, {BOOLQ: golds},
                     prompts={BOOLQ: prompts})
    comparison = compare(ws, ["base", "tuned"])
    row, pair = pair_of(comparison, "accuracy")
    assert row.values == {"base": 1.0, "tuned": 1.0} and pair.delta == 0.0  # metrics still shown
    assert pair.p_value is None and pair.test is None
    assert pair.unavailable.startswith("items differ: item 3 has a different prompt in base and tuned")
    assert any("items differ" in w for w in comparison.warnings)


def test_refuses_statistics_when_golds_or_item_sets_differ(ws):
    golds = [True, False] * 10
    write_evaluation(ws, "base", {BOOLQ: boolq_outputs(golds, [True] * 20)}, {BOOLQ: golds})
    other_golds = list(golds)
    other_golds[5] = not other_golds[5]
    write_evaluation(ws, "flipped", {BOOLQ: boolq_outputs(other_golds, [True] * 20)}, {BOOLQ: other_golds})
    write_evaluation(ws, "shorter", {BOOLQ: boolq_outputs(golds[:15], [True] * 15)}, {BOOLQ: golds[:15]})
    comparison = compare(ws, ["base", "flipped", "shorter"])
    _, flipped = pair_of(comparison, "mcc", model="flipped")
    assert "item 5 has a different gold" in flipped.unavailable
    _, shorter = pair_of(comparison, "accuracy", model="shorter")
    assert shorter.unavailable.startswith("items differ: base has 20 items and shorter 15")
    assert "only in base: 15, 16, 17, 18, 19" in shorter.unavailable


def test_legacy_files_show_metrics_but_no_statistics(ws):
    golds = list("ABCD") * 5
    write_evaluation(ws, "ours", {ARC: [boxed(g) for g in golds]}, {ARC: golds})
    write_json(ws.metrics_dir / f"Models__{LEGACY_NAME}.json", legacy_metrics())
    comparison = compare(ws, ["ours", LEGACY_NAME])
    assert [d.name for d in comparison.datasets] == ["ai2_arc"]
    row, pair = pair_of(comparison, "macro_f1", "ai2_arc")
    assert row.values == {"ours": 1.0, LEGACY_NAME: 0.8803}
    assert pair.delta == pytest.approx(0.8803 - 1.0)
    assert pair.p_value is None and pair.ci_low is None and pair.b is None
    assert "no per-item predictions" in pair.unavailable and "old research scripts" in pair.unavailable
    assert set(comparison.skipped_datasets) == {MATH, SQUAD}
    # the other way round: the reference has no predictions
    _, reverse = pair_of(compare(ws, [LEGACY_NAME, "ours"]), "accuracy", "ai2_arc")
    assert reverse.unavailable and reverse.p_value is None


def test_missing_or_stale_or_broken_predictions_make_statistics_unavailable(ws):
    right = [True] * 15 + [False] * 5
    write_boolq_pair(ws, right, [True] * 20)
    predictions = ws.predictions_folder("tuned") / "test-boolq.jsonl"
    lines = predictions.read_text().splitlines()
    lines[0] = lines[0].replace('"correct": true', '"correct": false')
    predictions.write_text("\n".join(lines) + "\n")
    _, stale = pair_of(compare(ws, ["base", "tuned"]), "accuracy")
    assert "does not match the metrics file (20 items, 19 correct" in stale.unavailable
    predictions.write_text("{not json\n")
    _, broken = pair_of(compare(ws, ["base", "tuned"]), "accuracy")
    assert "line 1 is not valid JSON" in broken.unavailable
    predictions.unlink()
    _, missing = pair_of(compare(ws, ["base", "tuned"]), "accuracy")
    assert missing.unavailable == ("no per-item predictions for tuned: "
                                   "Testing/predictions/tuned/test-boolq.jsonl is missing")


def test_duplicate_indexes_are_refused(ws):
    write_boolq_pair(ws, [True] * 4, [True] * 4)
    path = ws.predictions_folder("tuned") / "test-boolq.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["index"] = 1
    write_jsonl(path, rows)
    _, pair = pair_of(compare(ws, ["base", "tuned"]), "accuracy")
    assert "item index 1 appears twice" in pair.unavailable


def test_compare_errors(ws):
    write_boolq_pair(ws, [True] * 4, [True] * 4)
    (ws.metrics_dir / "corrupt.json").write_text("{", encoding="utf-8")
    with pytest.raises(CompareError, match="at least two models"):
        compare(ws, ["base"])
    with pytest.raises(CompareError, match="no metrics file for model 'tunde'.*did you mean tuned"):
        compare(ws, ["base", "tunde"])
    with pytest.raises(CompareError, match="more than once: base"):
        compare(ws, ["base", "Models/base"])
    with pytest.raises(CompareError, match="corrupt.json: cannot read as JSON"):
        compare(ws, ["base", "corrupt"])
    with pytest.raises(CompareError, match="at least 1,000"):
        compare(ws, ["base", "tuned"], resamples=200)


def test_three_models_compare_against_the_first(ws):
    golds = [True, False] * 10
    for name, right in (("base", [True] * 10 + [False] * 10), ("lora", [True] * 20),
                        ("dora", [True] * 10 + [False] * 10)):
        write_evaluation(ws, name, {BOOLQ: boolq_outputs(golds, right)}, {BOOLQ: golds})
    comparison = compare(ws, ["base", "lora", "dora"])
    row = pair_of(comparison, "accuracy")[0]
    assert [p.model for p in row.pairs] == ["lora", "dora"]
    lora, dora = row.pairs
    assert (lora.b, lora.c, lora.significant) == (0, 10, True)
    assert (dora.b, dora.c, dora.p_value, dora.delta) == (0, 0, 1.0, 0.0)


# --- exports and CLI ---------------------------------------------------------------------------------

@pytest.fixture
def compared_ws(ws):
    right_a = [True] * 12 + [True] + [False] * 6 + [False]
    right_b = [True] * 12 + [False] + [True] * 6 + [False]
    write_boolq_pair(ws, right_a, right_b)
    write_json(ws.metrics_dir / f"Models__{LEGACY_NAME}.json", legacy_metrics())
    return ws


def test_comparison_exports(compared_ws):
    comparison = compare(compared_ws, ["base", "tuned"])
    markdown = comparison_markdown(comparison)
    accuracy_line = next(line for line in markdown.splitlines() if line.startswith("| boolq | accuracy |"))
    # detectable: n = 20, discordance 7/20 (tests/engine/results/test_power.py checks the formula)
    assert accuracy_line == "| boolq | accuracy | 0.6500 | **0.9000** | +0.2500 | b=1, c=6, detectable ±0.349 | 0.125 |"
    _, mcc = pair_of(comparison, "mcc")
    mcc_cells = next(line for line in markdown.splitlines() if line.startswith("| boolq | mcc |")).split(" | ")
    assert mcc_cells[5] == f"[{mcc.ci_low:+.4f}, {mcc.ci_high:+.4f}]"
    assert mcc_cells[6].rstrip(" |") == f"{mcc.p_value:.3f}" + (" *" if mcc.significant else "")
    assert "exact McNemar" in markdown and "1000 resamples, seed 0" in markdown
    latex = comparison_latex(comparison)
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{0.9000}", r"$\Delta$"):
        assert command in latex
    parsed = list(csv.DictReader(io.StringIO(comparison_csv(comparison))))
    accuracy = next(r for r in parsed if r["metric"] == "accuracy")
    assert (accuracy["model"], accuracy["b"], accuracy["c"], float(accuracy["p_value"])) == ("tuned", "1", "6", 0.125)
    data = json.loads(comparison_json(comparison))
    assert data["baseline"] == "base" and data["datasets"][0]["metrics"][0]["pairs"][0]["c"] == 6


def test_significance_marker_in_exports(ws):
    write_boolq_pair(ws, [True] * 4 + [False] * 8 + [True] * 8, [True] * 20)
    comparison = compare(ws, ["base", "tuned"])
    markdown = comparison_markdown(comparison)
    assert "| boolq | accuracy | 0.6000 | **1.0000** | +0.4000 | b=0, c=8 | 0.008 * |" in markdown
    assert r"0.008$^{*}$" in comparison_latex(comparison)


@pytest.mark.parametrize("flag", ["--json", "--csv", "--markdown", "--latex"])
def test_cli_compare_formats(compared_ws, capsys, flag):
    assert main(["-w", str(compared_ws.root), "compare", "base", "tuned", LEGACY_NAME, flag]) == 0
    out = capsys.readouterr().out
    assert "0.125" in out and "tuned" in out


def test_cli_compare_screen_and_errors(compared_ws, capsys):
    assert main(["-w", str(compared_ws.root), "compare", "base", "tuned", "--resamples", "1500",
                 "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "b=1, c=6" in out and "1500 resamples, seed 3" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["-w", str(compared_ws.root), "compare", "base", "nobody"])
    assert exit_info.value.code == 2
    assert "no metrics file for model 'nobody'" in capsys.readouterr().err
