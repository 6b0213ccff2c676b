"""engine.results.scoring against hand-computed cases (the arithmetic is in the comments)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr

from engine.data.kinds import TASK_KINDS, headline_metric
from engine.results.scoring import (
    ItemScore,
    compute_metrics,
    describe,
    extract_boxed,
    first_box_closed,
    normalize_squad,
    parse_bool,
    parse_mcq_choice,
    parse_number,
    score_item,
    squad_f1,
    summarize_dataset,
)

DATASETS = Path(__file__).resolve().parents[4] / "shared" / "datasets"


def boxed(answer: str) -> str:
    return f"Some reasoning first. \\boxed{{{answer}}} trailing words"


def assert_plain_json(value) -> None:
    """Only Python builtins all the way down (no numpy scalars), and json.dumps accepts it."""
    json.dumps(value)
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain_json(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            assert_plain_json(item)
    else:
        assert type(value) in (int, float, str, bool, type(None)), (value, type(value))


# --- extraction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The answer is \boxed{B}.", "B"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\text{a {deeply {nested}} one}}", r"\text{a {deeply {nested}} one}"),
        (r"first \boxed{A} then \boxed{B}", "A"),
        (r"\boxed{ True }", "True"),
        (r"\boxed{}", ""),
        (r"\boxed {C}", "C"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are literal, not grouping
        ("no box at all", None),
        (r"\boxed{unclosed", None),
        (r"\boxed{\frac{1}{2}", None),  # the inner braces close, the box does not
        (r"\boxed{\}", None),  # \} is literal, so the box is still open
        (r"\boxed{open \boxed{B}", None),  # the FIRST box is unclosed
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected
    assert first_box_closed(text) is (expected is not None)


def test_first_box_closed_grows_with_generation():
    stream = r"Thinking... \boxed{\frac{3}{4}} more"
    closed_at = [first_box_closed(stream[:end]) for end in range(len(stream) + 1)]
    closing = stream.index("}} more") + 2  # the prefix that includes the box's own "}"
    assert closed_at == [False] * closing + [True] * (len(stream) + 1 - closing)


# --- mcq4 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("b", "B"),
        ("B. some text", "B"),
        ("(C) the mitochondria", "C"),
        ("D) text", "D"),
        ("[a]", "A"),
        (r"\text{D}", "D"),
        ("Answer: C", "C"),
        ("1", "A"),
        ("4", "D"),
        ("E", None),
        ("5", None),
        ("10", None),
        ("Both", None),  # starts with B but is not a choice
        ("All of the above", None),
        ("a cat", None),  # lower-case letter followed by text is a word, not a choice
        ("", None),
    ],
)
def test_parse_mcq_choice(answer, expected):
    assert parse_mcq_choice(answer) == expected


def test_mcq4_numeric_gold_labels_map_to_letters():
    # ARC rows with numbered options have gold "1"-"4"; the legacy scripts could never score them.
    assert score_item("mcq4", boxed("C"), "3") == ItemScore("C", "C", True, None, True)
    assert score_item("mcq4", boxed("3"), "3").correct
    assert score_item("mcq4", boxed("3"), "C").correct
    assert score_item("mcq4", boxed("2"), 2).gold == "B"
    assert not score_item("mcq4", boxed("A"), "4").correct


def test_mcq4_no_box_and_unparseable():
    assert score_item("mcq4", "The answer is B", "B") == ItemScore(None, "B", False, None, False)
    assert score_item("mcq4", boxed("E"), "B") == ItemScore(None, "B", False, None, True)


def test_mcq4_bad_gold_names_the_value():
    with pytest.raises(ValueError, match="'E'"):
        score_item("mcq4", boxed("A"), "E")


def test_mcq4_metrics_hand_computed():
    items = [  # (gold, model answer)
        ("A", "A"),
        ("A", "B"),
        ("B", "B"),
        ("B", "E"),  # invalid prediction
        ("C", "C"),
        ("C", "(C)"),
        ("D", "A"),
        ("3", "3"),  # numeric label: gold C, pred C
    ]
    scores = [score_item("mcq4", boxed(answer), gold) for gold, answer in items]
    metrics = compute_metrics("mcq4", scores)
    # rows gold A-D, columns pred A-D; the invalid B row item is not in the matrix
    assert metrics["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 3, 0], [1, 0, 0, 0]]
    assert metrics["invalid_predictions"] == 1
    assert metrics["accuracy"] == pytest.approx(5 / 8)  # items 1, 3, 5, 6, 8
    per_class = metrics["per_class"]
    # A: tp 1, predicted A twice (rows A and D), support 2 -> P 1/2, R 1/2, F1 1/2
    assert per_class["A"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # B: tp 1, predicted B twice (rows A and B), support 2 (one invalid) -> P 1/2, R 1/2, F1 1/2
    assert per_class["B"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # C: tp 3, predicted 3, support 3 -> all 1
    assert per_class["C"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3})
    # D: tp 0, never predicted, support 1 -> zero_division 0
    assert per_class["D"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # macro F1 = (0.5 + 0.5 + 1 + 0) / 4
    assert metrics["macro_f1"] == pytest.approx(0.5)
    assert_plain_json(metrics)


def test_mcq4_macro_f1_skips_classes_absent_from_gold_and_predictions():
    # gold A, A; pred A, B.  A: tp 1, pred 1, support 2 -> P 1, R 1/2, F1 2/3.
    # B: tp 0, pred 1, support 0 -> F1 0.  C and D never occur: not averaged.  macro = (2/3 + 0) / 2
    scores = [score_item("mcq4", boxed("A"), "A"), score_item("mcq4", boxed("B"), "A")]
    metrics = compute_metrics("mcq4", scores)
    assert metrics["per_class"]["A"]["f1"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx(1 / 3)
    assert metrics["per_class"]["C"]["support"] == 0


# --- boolq ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("True", True),
        ("true", True),
        ("YES", True),
        ("Yes, it is.", True),
        (r"\text{False}", False),
        ("no", False),
        ("False.", False),
        ("maybe", None),
        ("not true", None),
        ("", None),
    ],
)
def test_parse_bool(answer, expected):
    assert parse_bool(answer) is expected


@pytest.mark.parametrize("gold", [True, "True", "true", "yes", np.bool_(True)])
def test_boolq_gold_forms(gold):
    score = score_item("boolq", boxed("yes"), gold)
    assert score == ItemScore(True, True, True, None, True)
    assert type(score.gold) is bool


def test_boolq_unparseable_is_wrong_and_bad_gold_raises():
    assert score_item("boolq", boxed("perhaps"), False) == ItemScore(None, False, False, None, True)
    assert score_item("boolq", "False", False) == ItemScore(None, False, False, None, False)
    with pytest.raises(ValueError, match="'maybe'"):
        score_item("boolq", boxed("True"), "maybe")


def test_boolq_metrics_hand_computed():
    golds = [True, True, True, True, False, False, False]
    answers = ["True", "yes", "False", "dunno", "False", "no", "True"]
    scores = [score_item("boolq", boxed(answer), gold) for gold, answer in zip(golds, answers)]
    metrics = compute_metrics("boolq", scores)
    # TP: items 1, 2; FN: item 3 and item 4 (unparseable, counted as the opposite of gold True);
    # TN: items 5, 6; FP: item 7
    assert metrics["confusion"] == {"TP": 2, "TN": 2, "FP": 1, "FN": 2}
    assert metrics["invalid_predictions"] == 1
    assert metrics["accuracy"] == pytest.approx(4 / 7)
    # F1(True) = 2*2 / (2*2 + 1 + 2) = 4/7;  F1(False) = 2*2 / (2*2 + 2 + 1) = 4/7
    assert metrics["f1"] == pytest.approx(4 / 7)
    assert metrics["macro_f1"] == pytest.approx(4 / 7)
    # recall(True) = 2/4, recall(False) = 2/3 -> (1/2 + 2/3) / 2 = 7/12
    assert metrics["balanced_accuracy"] == pytest.approx(7 / 12)
    # MCC = (2*2 - 1*2) / sqrt(3 * 4 * 3 * 4) = 2/12
    assert metrics["mcc"] == pytest.approx(1 / 6)
    # MCC is Pearson's phi on the 0/1 vectors (the unparseable item as its opposite of gold, 0)
    effective_pred = [1, 1, 0, 0, 0, 0, 1]
    assert metrics["mcc"] == pytest.approx(pearsonr([int(g) for g in golds], effective_pred)[0])
    assert_plain_json(metrics)


def test_boolq_asymmetric_case():
    # TP 3, TN 1, FP 2, FN 0 (n 6)
    golds = [True, True, True, False, False, False]
    answers = ["True", "True", "True", "True", "True", "False"]
    metrics = compute_metrics("boolq", [score_item("boolq", boxed(a), g) for g, a in zip(golds, answers)])
    assert metrics["confusion"] == {"TP": 3, "TN": 1, "FP": 2, "FN": 0}
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["f1"] == pytest.approx(6 / 8)  # 2*3 / (6 + 2 + 0)
    assert metrics["macro_f1"] == pytest.approx((6 / 8 + 2 / 4) / 2)  # F1(False) = 2*1 / (2 + 0 + 2)
    assert metrics["balanced_accuracy"] == pytest.approx((3 / 3 + 1 / 3) / 2)
    # MCC = (3*1 - 2*0) / sqrt(5 * 3 * 3 * 1) = 3 / sqrt(45)
    assert metrics["mcc"] == pytest.approx(3 / math.sqrt(45))
    assert metrics["mcc"] == pytest.approx(pearsonr([1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0])[0])


def test_boolq_mcc_zero_denominator():
    # all gold True, all predicted True: TN + FP = 0, so MCC's denominator is 0 -> 0.0
    scores = [score_item("boolq", boxed("True"), True) for _ in range(3)]
    metrics = compute_metrics("boolq", scores)
    assert metrics["confusion"] == {"TP": 3, "TN": 0, "FP": 0, "FN": 0}
    assert metrics["mcc"] == 0.0
    assert metrics["accuracy"] == 1.0
    assert metrics["f1"] == 1.0
    assert metrics["macro_f1"] == 1.0  # only the True class occurs
    assert metrics["balanced_accuracy"] == 1.0  # only the True class is in gold


def test_boolq_no_positive_predictions_gives_zero_f1():
    # gold True, False; both predicted False: TP 0, FN 1, TN 1, FP 0
    scores = [score_item("boolq", boxed("False"), True), score_item("boolq", boxed("False"), False)]
    metrics = compute_metrics("boolq", scores)
    assert metrics["f1"] == 0.0
    assert metrics["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)  # F1(False) = 2 / (2 + 1 + 0)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)
    assert metrics["mcc"] == 0.0  # (0*1 - 0*1) / sqrt(0 * ...) -> zero denominator


# --- squad_v2 ------------------------------------------------------------------------------------


def test_normalize_squad():
    assert normalize_squad("The  Denver Broncos!") == "denver broncos"
    assert normalize_squad("An apple, a day") == "apple day"
    assert normalize_squad("theory of the atom") == "theory of atom"  # "theory" keeps its "the"
    assert normalize_squad("  ") == ""


def test_squad_token_f1():
    assert squad_f1("cat sat on mat", "cat sat on mat") == 1.0
    # pred cat cat sat, gold cat sat down: common = {cat: 1, sat: 1} = 2; P = 2/3, R = 2/3
    assert squad_f1("cat cat sat", "cat sat down") == pytest.approx(2 / 3)
    # pred broncos, gold denver broncos: common 1; P = 1, R = 1/2, F1 = 2/3
    assert squad_f1("broncos", "denver broncos") == pytest.approx(2 / 3)
    assert squad_f1("", "") == 1.0
    assert squad_f1("", "paris") == 0.0
    assert squad_f1("paris", "") == 0.0
    assert squad_f1("london", "paris") == 0.0


@pytest.mark.parametrize(
    "answer",
    ["", "unanswerable", "Unanswerable.", "no answer", "None", "N/A", "not answerable", "Cannot be answered"],
)
def test_squad_no_answer_phrases(answer):
    assert score_item("squad_v2", boxed(answer), "") == ItemScore("", (), True, 1.0, True)
    assert score_item("squad_v2", boxed(answer), "Paris") == ItemScore("", ("paris",), False, 0.0, True)


def test_squad_gold_forms():
    assert score_item("squad_v2", boxed("x"), ["Paris", "the city"]).gold == ("paris", "city")
    assert score_item("squad_v2", boxed("x"), {"text": ["Paris"], "answer_start": [3]}).gold == ("paris",)
    assert score_item("squad_v2", boxed("x"), []).gold == ()
    assert score_item("squad_v2", boxed("x"), ["", "the"]).gold == ()  # normalise to nothing: unanswerable
    assert score_item("squad_v2", boxed("x"), np.array(["Paris", "Rome"])).gold == ("paris", "rome")
    with pytest.raises(ValueError, match="None"):
        score_item("squad_v2", boxed("x"), None)


def test_squad_metrics_hand_computed():
    items = [  # (gold, model answer or None for no box)
        ("Denver Broncos", "the Denver Broncos."),  # EM 1, F1 1
        ("Denver Broncos", "Broncos"),  # EM 0, F1 2/3
        ("", "unanswerable"),  # no answer, unanswerable: EM 1, F1 1
        ("", "Paris"),  # answered an unanswerable one: EM 0, F1 0
        (["Paris", "the city of Paris"], "city of Paris"),  # EM 1 against the second gold
        ("Paris", None),  # no box: wrong, F1 0
        ("Paris", "N/A"),  # abstained on an answerable one: EM 0, F1 0
    ]
    outputs = [boxed(answer) if answer is not None else "Paris" for _, answer in items]
    scores = [score_item("squad_v2", output, gold) for output, (gold, _) in zip(outputs, items)]
    assert [score.correct for score in scores] == [True, False, True, False, True, False, False]
    assert scores[5] == ItemScore(None, ("paris",), False, 0.0, False)
    metrics = compute_metrics("squad_v2", scores)
    assert metrics["EM"] == pytest.approx(3 / 7)
    assert metrics["F1"] == pytest.approx((1 + 2 / 3 + 1 + 0 + 1 + 0 + 0) / 7)  # 11/21
    assert metrics["HasAns_total"] == 5  # items 1, 2, 5, 6, 7
    assert metrics["HasAns_EM"] == pytest.approx(2 / 5)
    assert metrics["HasAns_F1"] == pytest.approx((1 + 2 / 3 + 1 + 0 + 0) / 5)  # 8/15
    assert metrics["NoAns_total"] == 2  # items 3, 4
    assert metrics["NoAns_accuracy"] == pytest.approx(1 / 2)
    # answer-vs-no-answer right for items 1, 2, 3, 5; wrong for 4 (answered), 6 (no box), 7 (abstained)
    assert metrics["AvNA"] == pytest.approx(4 / 7)
    assert_plain_json(metrics)


def test_squad_metrics_without_unanswerable_items():
    metrics = compute_metrics("squad_v2", [score_item("squad_v2", boxed("Paris"), "Paris")])
    assert metrics["NoAns_total"] == 0
    assert metrics["NoAns_accuracy"] is None
    assert metrics["HasAns_EM"] == 1.0


# --- math_numeric --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1008", 1008.0),
        ("1,008", 1008.0),
        ("$1,008.00", 1008.0),
        (r"\$1,008", 1008.0),
        ("1008.0", 1008.0),
        ("1008.", 1008.0),
        ("1 008", 1008.0),
        ("1{,}008", 1008.0),
        ("-42", -42.0),
        ("+3", 3.0),
        (".5", 0.5),
        ("3/4", 0.75),
        ("-3/4", -0.75),
        (r"\frac{1}{2}", 0.5),
        (r"\dfrac{7}{4}", 1.75),
        (r"-\frac{3}{4}", -0.75),
        (r"\tfrac{-3}{4}", -0.75),
        (r"\text{12}", 12.0),
        ("x = 7", 7.0),
        (r"25\%", 25.0),
        (r"90^\circ", 90.0),
        ("{5}", 5.0),
        ("1/0", None),
        ("seven", None),
        (r"\frac{\sqrt{2}}{2}", None),
        ("3 + 4", None),
        ("inf", None),
        ("nan", None),
        ("", None),
    ],
)
def test_parse_number(answer, expected):
    assert parse_number(answer) == expected


def test_math_tolerance():
    # absolute 1e-4 ...
    assert score_item("math_numeric", boxed("2.00009"), 2.0).correct
    assert not score_item("math_numeric", boxed("2.0002"), 2.0).correct
    # ... relative 1e-9 only above 1e5: 4194304 * 1e-9 = 0.0042, so an integer off by one stays wrong
    assert not score_item("math_numeric", boxed("4194305"), 4194304.0).correct
    assert score_item("math_numeric", boxed("1000000000500"), 1e12).correct  # tolerance 1000
    assert not score_item("math_numeric", boxed("1000000002000"), 1e12).correct


def test_math_gold_forms():
    assert score_item("math_numeric", boxed("1008"), 1008.0) == ItemScore(1008.0, 1008.0, True, None, True)
    assert score_item("math_numeric", boxed("1008"), 1008).correct
    assert score_item("math_numeric", boxed("1008"), "1,008").correct
    score = score_item("math_numeric", boxed("1008"), np.float64(1008.0))
    assert score.correct and type(score.gold) is float
    for bad in ("seven", None, float("nan"), True):
        with pytest.raises(ValueError, match="math_numeric gold"):
            score_item("math_numeric", boxed("1"), bad)


def test_math_metrics_hand_computed():
    items = [  # (gold, model answer or None for no box)
        (1008.0, "$1,008"),  # right, |diff| 0
        (0.5, r"\frac{1}{2}"),  # right, 0
        (-3.0, "-2.5"),  # wrong, 0.5
        (16.67, "16.666"),  # wrong (gold was rounded by the dataset), 0.004
        (7.0, "seven"),  # unparseable
        (7.0, None),  # no box
    ]
    scores = [score_item("math_numeric", boxed(a) if a is not None else "7", g) for g, a in items]
    metrics = compute_metrics("math_numeric", scores)
    assert metrics["accuracy"] == pytest.approx(2 / 6)
    assert metrics["parseable_rate"] == pytest.approx(4 / 6)
    assert metrics["avg_abs_diff"] == pytest.approx((0 + 0 + 0.5 + 0.004) / 4)
    assert_plain_json(metrics)


def test_math_nothing_parseable():
    metrics = compute_metrics("math_numeric", [score_item("math_numeric", boxed("x"), 1.0)])
    assert metrics == {"accuracy": 0.0, "avg_abs_diff": None, "parseable_rate": 0.0}


# --- datasets, summaries and kinds ---------------------------------------------------------------


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_empty_dataset_never_raises(kind):
    summary = summarize_dataset(kind, [], [], [])
    assert summary["total_samples"] == 0
    assert summary["correct"] == summary["incorrect"] == 0
    assert summary["accuracy"] is None
    assert summary["format_success_rate"] is None
    assert summary["latency_seconds"] == {
        "sum": 0.0, "mean": None, "median": None, "mode": None, "std": None, "per_prompt": []
    }
    assert summary["tokens_generated"]["sum"] == 0
    assert summary["metrics"][headline_metric(kind)] is None
    assert_plain_json(summary)


def test_empty_metrics_values():
    assert compute_metrics("mcq4", [])["confusion_matrix"] == [[0] * 4] * 4
    boolq = compute_metrics("boolq", [])
    assert boolq["mcc"] is None and boolq["f1"] is None and boolq["balanced_accuracy"] is None
    squad = compute_metrics("squad_v2", [])
    assert squad["HasAns_total"] == squad["NoAns_total"] == 0 and squad["AvNA"] is None


def test_summarize_dataset_hand_computed():
    golds = [True, False, True, False]
    outputs = [boxed("True"), boxed("True"), "True, no box", boxed("False")]
    scores = [score_item("boolq", output, gold) for output, gold in zip(outputs, golds)]
    # numpy inputs (as a batched generator may produce them) must come out as plain Python numbers
    latencies = np.array([1.0, 2.0, 2.0, 5.0])
    tokens = np.array([10, 20, 20, 30])
    summary = summarize_dataset("boolq", scores, list(latencies), list(tokens))
    assert summary["type"] == "boolq"
    assert summary["total_samples"] == 4
    assert summary["format_success_rate"] == pytest.approx(3 / 4)
    assert summary["correct"] == 2 and summary["incorrect"] == 2  # items 1 and 4
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["metrics"] == compute_metrics("boolq", scores)
    # latencies: sum 10, mean 2.5, median 2, mode 2, population std sqrt((2.25+.25+.25+6.25)/4) = 1.5
    assert summary["latency_seconds"] == {
        "sum": 10.0, "mean": 2.5, "median": 2.0, "mode": 2.0, "std": 1.5, "per_prompt": [1.0, 2.0, 2.0, 5.0]
    }
    # tokens: sum 80, mean 20, median 20, mode 20, std sqrt((100+0+0+100)/4) = sqrt(50)
    tokens_block = summary["tokens_generated"]
    assert tokens_block["sum"] == 80 and type(tokens_block["sum"]) is int
    assert (tokens_block["mean"], tokens_block["median"], tokens_block["mode"]) == (20.0, 20.0, 20)
    assert tokens_block["std"] == pytest.approx(math.sqrt(50))
    assert tokens_block["per_prompt"] == [10, 20, 20, 30]
    assert_plain_json(summary)


def test_describe_even_median_and_first_mode():
    # median of 1, 2, 3, 4 = (2 + 3) / 2; every value occurs once, so the mode is the first one
    stats = describe([3, 1, 4, 2])
    assert stats["median"] == 2.5 and stats["mode"] == 3 and stats["mean"] == 2.5


def test_summarize_dataset_rejects_bad_lists():
    scores = [score_item("boolq", boxed("True"), True)]
    with pytest.raises(ValueError, match="latencies_s has 2 values for 1"):
        summarize_dataset("boolq", scores, [1.0, 2.0], [3])
    with pytest.raises(ValueError, match="tokens has 0 values"):
        summarize_dataset("boolq", scores, [1.0], [])
    with pytest.raises(ValueError, match="latencies_s must be finite"):
        summarize_dataset("boolq", scores, [-1.0], [3])


def test_unknown_kind_is_named():
    for call in (
        lambda: score_item("mcq5", "x", "A"),
        lambda: compute_metrics("mcq5", []),
        lambda: summarize_dataset("mcq5", [], [], []),
    ):
        with pytest.raises(ValueError, match="'mcq5'.*mcq4, boolq, squad_v2, math_numeric"):
            call()


def test_headline_metric_is_a_key_of_compute_metrics():
    assert [headline_metric(kind) for kind in TASK_KINDS] == ["macro_f1", "accuracy", "F1", "accuracy"]
    for kind in TASK_KINDS:
        assert headline_metric(kind) in compute_metrics(kind, [])
        assert headline_metric(kind, compute_metrics(kind, [])) == headline_metric(kind)


def test_the_one_headline_metric_is_tolerant_of_any_kind():
    """Built-in kinds, lm-eval results (``acc``, else their first metric), old files and kinds it does not know."""
    assert headline_metric("lm-eval", {"acc_norm": 0.4, "acc": 0.5}) == "acc"
    assert headline_metric("lm-eval", ["exact_match", "f1"]) == "exact_match"
    assert headline_metric("lm-eval", []) is None
    assert headline_metric("math_numeric", ["avg_abs_diff"]) == "avg_abs_diff"  # an old math file
    assert headline_metric("mcq5") == headline_metric(None) == "accuracy"


# --- real benchmark golds: an oracle that boxes the gold answer scores 1.0 ------------------------


def _oracle_answer(kind: str, gold) -> str:
    if kind == "math_numeric":
        return f"${gold:,}"  # 1008.0 -> "$1,008.0": exercises the $ and comma stripping
    return str(gold)


@pytest.mark.parametrize(
    ("kind", "stem"),
    [
        ("mcq4", "ai2_arc"),
        ("boolq", "boolq"),
        ("squad_v2", "squad_v2"),
        ("math_numeric", "OpenMathInstruct-2"),
    ],
)
def test_oracle_scores_perfectly_on_real_test_golds(kind, stem):
    path = DATASETS / f"test-{stem}.parquet"
    if not path.exists():
        pytest.skip(f"{path} is not present in this checkout")
    import pyarrow.parquet as pq

    golds = pq.read_table(path, columns=["answer"]).column("answer").to_pylist()
    scores = [score_item(kind, boxed(_oracle_answer(kind, gold)), gold) for gold in golds]
    summary = summarize_dataset(kind, scores, [0.1] * len(scores), [5] * len(scores))
    assert summary["accuracy"] == 1.0, [s for s in scores if not s.correct][:3]
    assert summary["format_success_rate"] == 1.0
    assert summary["metrics"][headline_metric(kind)] == 1.0
    assert_plain_json(summary)
