"""Task metric definitions: answer extraction, per-item scoring and dataset metrics (job process and compare).

Four task kinds (``TASK_KINDS``): ``mcq4`` (ARC, letters A-D), ``boolq`` (True/False),
``squad_v2`` (extractive QA with unanswerable questions) and ``math_numeric`` (one number).

Conventions shared by every function here:

* The model's answer is the content of the FIRST ``\\boxed{...}``. An output without a closed box has
  no prediction (``pred`` is ``None``) and counts as wrong for every kind, squad_v2 included (a
  missing box is a format failure, not an abstention).
* Every rate is a fraction in [0, 1], never a percentage (squad_v2's EM/F1 too, unlike the official
  script's 0-100).
* A rate over zero items is ``None`` (an empty dataset never raises). On a non-empty set, precision,
  recall, F1 and MCC with a zero denominator are ``0.0`` (scikit-learn's ``zero_division=0``).
* Outputs are plain Python ``int``/``float``/``str``/``bool``/``None``/lists/dicts, ready for JSON.
"""

from __future__ import annotations

import math
import re
import statistics
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from engine.data.kinds import BOOL_WORDS, DIGIT_TO_LETTER, MCQ_LABELS, TASK_KINDS

#: Version of the answer-extraction and scoring rules in this module, recorded in every metrics file
#: (``extractor_version``). Bump it whenever a change here can change an item's ``pred`` or ``correct``:
#: ``llmtui compare`` warns when two runs were scored by different versions.
EXTRACTOR_VERSION = 1

#: math_numeric: a prediction is correct when |pred - gold| <= max(ABS_TOL, REL_TOL * |gold|).
#: The relative part (math.isclose's default 1e-9) only matters above |gold| = 1e5.
MATH_ABS_TOL = 1e-4
MATH_REL_TOL = 1e-9

#: squad_v2 predictions that mean "no answer", compared after SQuAD normalisation.
NO_ANSWER_PHRASES = frozenset(
    {
        "",
        "unanswerable",
        "no answer",
        "none",
        "na",  # "n/a" once punctuation is stripped
        "not answerable",
        "cannot be answered",
        "can not be answered",
        "cannot answer",
        "no answer found",
        "not mentioned",
        "not in context",
        "not enough information",
    }
)


@dataclass(frozen=True)
class ItemScore:
    """One scored item.

    ``pred``/``gold`` are normalised: a letter (mcq4), a bool (boolq), a float (math_numeric), or for
    squad_v2 a normalised string (``""`` = predicted no answer) and a tuple of normalised gold answers
    (empty = unanswerable). ``pred`` is ``None`` when there is no box or it cannot be parsed.
    ``f1`` is the token F1 for squad_v2 and ``None`` otherwise.
    """

    pred: Any
    gold: Any
    correct: bool
    f1: float | None
    has_box: bool


# --- answer extraction -------------------------------------------------------------------------

_BOX_OPEN = re.compile(r"\\boxed\s*\{")


def _first_box_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the first box's content, or None when there is no box or it is unclosed."""
    match = _BOX_OPEN.search(text)
    if match is None:
        return None
    depth = 1
    index = match.end()
    while index < len(text):
        char = text[index]
        if char == "\\":  # \{ and \} are literal braces; \\ is a line break
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return match.end(), index
        index += 1
    return None


def extract_boxed(text: str) -> str | None:
    """The stripped content of the first ``\\boxed{...}`` (nested braces allowed).

    None when there is no box or the first one is unclosed.
    """
    span = _first_box_span(text)
    return None if span is None else text[span[0] : span[1]].strip()


def first_box_closed(text: str) -> bool:
    """True once the first ``\\boxed{`` in ``text`` has its matching ``}`` (a generation stop criterion)."""
    return _first_box_span(text) is not None


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|textit|texttt|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")


def _unwrap_text(answer: str) -> str:
    """Replace ``\\text{X}`` and similar font wrappers by ``X``."""
    previous = None
    while previous != answer:
        previous, answer = answer, _TEXT_WRAPPER.sub(r"\1", answer)
    return answer.strip()


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value; anything else unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes, list, tuple, dict)):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


# --- mcq4 ----------------------------------------------------------------------------------------

_MCQ_PREFIX = r"(?:(?i:answer|option|choice)\s*[:\-]?\s*)?"
# The whole answer is the choice: "B", "b", "(B)", "[b]", "B.", "b)", "2", "Answer: B".
_MCQ_ALONE = re.compile(_MCQ_PREFIX + r"[(\[]?\s*([A-Da-d1-4])\s*[)\]]?\s*[.:]?")
# An upper-case choice followed by its text: "B. some text", "(B) text", "B: text", "B text".
_MCQ_LEADING = re.compile(_MCQ_PREFIX + r"[(\[]?([A-D1-4])(?:[)\]][.:]?|[.:])?\s+\S")


def parse_mcq_choice(answer: str) -> str | None:
    """The letter A-D named by ``answer`` (digits 1-4 map to A-D), or None."""
    answer = _unwrap_text(answer)
    match = _MCQ_ALONE.fullmatch(answer) or _MCQ_LEADING.match(answer)
    if match is None:
        return None
    choice = match.group(1).upper()
    return DIGIT_TO_LETTER.get(choice, choice)


def _mcq_gold(gold: Any) -> str:
    label = str(_plain(gold)).strip().upper()
    label = DIGIT_TO_LETTER.get(label, label)
    if label not in MCQ_LABELS:
        raise ValueError(f"mcq4 gold answer {gold!r} is not one of A-D or 1-4")
    return label


# --- boolq ---------------------------------------------------------------------------------------

_FIRST_WORD = re.compile(r"[^a-z]*([a-z]+)")


def parse_bool(answer: str) -> bool | None:
    """True/False from the first word of ``answer`` (true/false/yes/no, any case), or None."""
    match = _FIRST_WORD.match(_unwrap_text(answer).lower())
    return BOOL_WORDS.get(match.group(1)) if match else None


def _bool_gold(gold: Any) -> bool:
    gold = _plain(gold)
    if isinstance(gold, bool):
        return gold
    if isinstance(gold, str):
        word = gold.strip().lower()
        if word in BOOL_WORDS:
            return BOOL_WORDS[word]
    raise ValueError(f"boolq gold answer {gold!r} is not a bool or one of true/false/yes/no")


# --- squad_v2 ------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_squad(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, collapse whitespace."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_f1(pred: str, gold: str) -> float:
    """Token F1 between two normalised strings (1.0 when both are empty, 0.0 when one is)."""
    pred_tokens, gold_tokens = pred.split(), gold.split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _squad_golds(gold: Any) -> tuple[str, ...]:
    """Normalised non-empty gold answers; an empty tuple means unanswerable."""
    gold = _plain(gold)
    if isinstance(gold, dict) and "text" in gold:  # the Hub's {"text": [...], "answer_start": [...]}
        gold = gold["text"]
    answers = [gold] if isinstance(gold, str) else list(gold) if isinstance(gold, Iterable) else None
    if answers is None or not all(isinstance(answer, str) for answer in answers):
        raise ValueError(f"squad_v2 gold answer {gold!r} is not a string or a list of strings")
    return tuple(normalized for normalized in map(normalize_squad, answers) if normalized)


def _squad_pred(answer: str) -> str:
    normalized = normalize_squad(_unwrap_text(answer))
    return "" if normalized in NO_ANSWER_PHRASES else normalized


# --- math_numeric --------------------------------------------------------------------------------

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_SLASH_FRACTION = re.compile(rf"({_NUMBER})/({_NUMBER})")
_LATEX_FRACTION = re.compile(rf"([+-]?)\\[dt]?frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}")
_NOISE = re.compile(r"\\\$|\$|\\[!,;: ]|\{,\}|,|\\left|\\right|\s+")
_TRAILING_UNIT = re.compile(r"(?:\\?%|\^\{?\\circ\}?)$")


def parse_number(answer: str) -> float | None:
    """A finite number from ``answer``, or None.

    Strips ``$``, commas, spaces, a trailing ``.``/``%``/degree sign and everything up to the last
    ``=``; accepts ``-12``, ``1,008.0``, ``3/4``, ``\\frac{3}{4}``, ``-\\dfrac{3}{4}``, ``\\tfrac{-3}{4}``
    (both parts of a fraction must be plain numbers, so ``\\frac{\\sqrt2}{2}`` gives None).
    """
    text = _NOISE.sub("", _unwrap_text(answer))
    text = text.rsplit("=", 1)[-1]
    text = _TRAILING_UNIT.sub("", text).rstrip(".")
    while text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    if match := _SLASH_FRACTION.fullmatch(text):
        numerator, denominator = float(match.group(1)), float(match.group(2))
    elif match := _LATEX_FRACTION.fullmatch(text):
        sign = -1.0 if match.group(1) == "-" else 1.0
        numerator, denominator = sign * float(match.group(2)), float(match.group(3))
    else:
        return None
    return numerator / denominator if denominator != 0 else None


def _math_gold(gold: Any) -> float:
    value = _plain(gold)
    if isinstance(value, str):
        value = parse_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"math_numeric gold answer {gold!r} is not a finite number")
    return float(value)


def numbers_match(pred: float, gold: float) -> bool:
    """|pred - gold| <= max(MATH_ABS_TOL, MATH_REL_TOL * |gold|)."""
    return abs(pred - gold) <= max(MATH_ABS_TOL, MATH_REL_TOL * abs(gold))


# --- per-item scoring ----------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")


def score_item(kind: str, output_text: str, gold: Any) -> ItemScore:
    """Score one model output against its gold answer (see the module docstring for the rules)."""
    _check_kind(kind)
    boxed = extract_boxed(output_text)
    has_box = boxed is not None
    if kind == "squad_v2":
        golds = _squad_golds(gold)
        if boxed is None:
            return ItemScore(None, golds, False, 0.0, False)
        pred = _squad_pred(boxed)
        candidates = golds or ("",)
        exact = any(pred == candidate for candidate in candidates)
        f1 = max(squad_f1(pred, candidate) for candidate in candidates)
        return ItemScore(pred, golds, exact, f1, True)
    if kind == "mcq4":
        gold_value, pred = _mcq_gold(gold), parse_mcq_choice(boxed) if has_box else None
        return ItemScore(pred, gold_value, pred == gold_value, None, has_box)
    if kind == "boolq":
        gold_value, pred = _bool_gold(gold), parse_bool(boxed) if has_box else None
        return ItemScore(pred, gold_value, pred == gold_value, None, has_box)
    gold_value, pred = _math_gold(gold), parse_number(boxed) if has_box else None
    correct = pred is not None and numbers_match(pred, gold_value)
    return ItemScore(pred, gold_value, correct, None, has_box)


# --- dataset metrics -----------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return float(precision), float(recall), float(f1)


def _mcq4_metrics(scores: list[ItemScore]) -> dict[str, Any]:
    """Macro F1 averages the classes that occur in gold or predictions (scikit-learn's default)."""
    index = {label: position for position, label in enumerate(MCQ_LABELS)}
    confusion = [[0] * 4 for _ in MCQ_LABELS]
    invalid = 0
    for score in scores:
        if score.gold not in index:
            raise ValueError(f"mcq4 score has gold {score.gold!r}, expected one of A-D")
        if score.pred in index:
            confusion[index[score.gold]][index[score.pred]] += 1
        else:
            invalid += 1
    per_class: dict[str, dict[str, Any]] = {}
    present_f1 = []
    for label, row in zip(MCQ_LABELS, confusion):
        column = index[label]
        tp = row[column]
        support = sum(1 for score in scores if score.gold == label)
        predicted = sum(confusion_row[column] for confusion_row in confusion)
        precision, recall, f1 = _precision_recall_f1(tp, predicted - tp, support - tp)
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or predicted:
            present_f1.append(f1)
    return {
        "accuracy": _ratio(sum(score.correct for score in scores), len(scores)),
        "macro_f1": _ratio(sum(present_f1), len(present_f1)),
        "per_class": per_class,
        "confusion_matrix": confusion,
        "invalid_predictions": invalid,
    }


def _boolq_metrics(scores: list[ItemScore]) -> dict[str, Any]:
    """True is the positive class; a missing or unparseable prediction counts as the opposite of gold."""
    tp = tn = fp = fn = invalid = 0
    for score in scores:
        if not isinstance(score.gold, bool):
            raise ValueError(f"boolq score has gold {score.gold!r}, expected a bool")
        if score.pred is None:
            invalid += 1
        predicted = score.pred if score.pred is not None else not score.gold
        if score.gold:
            tp, fn = (tp + 1, fn) if predicted else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if predicted else (fp, tn + 1)
    f1_true = _precision_recall_f1(tp, fp, fn)[2]
    f1_false = _precision_recall_f1(tn, fn, fp)[2]
    present_f1 = [f1 for f1, present in ((f1_true, tp + fp + fn), (f1_false, tn + fp + fn)) if present]
    recalls = [tp / (tp + fn)] if tp + fn else []
    recalls += [tn / (tn + fp)] if tn + fp else []
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "accuracy": _ratio(tp + tn, len(scores)),
        "f1": f1_true if scores else None,
        "macro_f1": _ratio(sum(present_f1), len(present_f1)),
        "balanced_accuracy": _ratio(sum(recalls), len(recalls)),
        "mcc": float((tp * tn - fp * fn) / denominator) if denominator else (0.0 if scores else None),
        "confusion": {"TP": tp, "TN": tn, "FP": fp, "FN": fn},
        "invalid_predictions": invalid,
    }


def _squad_v2_metrics(scores: list[ItemScore]) -> dict[str, Any]:
    """AvNA: did the model answer exactly when the question is answerable (a missing box is wrong)."""
    has_answer = [score for score in scores if score.gold]
    no_answer = [score for score in scores if not score.gold]
    avna_right = sum(score.pred is not None and bool(score.pred) == bool(score.gold) for score in scores)
    return {
        "EM": _ratio(sum(score.correct for score in scores), len(scores)),
        "F1": _ratio(sum(score.f1 or 0.0 for score in scores), len(scores)),
        "HasAns_EM": _ratio(sum(score.correct for score in has_answer), len(has_answer)),
        "HasAns_F1": _ratio(sum(score.f1 or 0.0 for score in has_answer), len(has_answer)),
        "HasAns_total": len(has_answer),
        "NoAns_accuracy": _ratio(sum(score.correct for score in no_answer), len(no_answer)),
        "NoAns_total": len(no_answer),
        "AvNA": _ratio(avna_right, len(scores)),
    }


def _math_numeric_metrics(scores: list[ItemScore]) -> dict[str, Any]:
    parsed = [score for score in scores if score.pred is not None]
    return {
        "accuracy": _ratio(sum(score.correct for score in scores), len(scores)),
        "avg_abs_diff": _ratio(sum(abs(score.pred - score.gold) for score in parsed), len(parsed)),
        "parseable_rate": _ratio(len(parsed), len(scores)),
    }


_METRICS = {
    "mcq4": _mcq4_metrics,
    "boolq": _boolq_metrics,
    "squad_v2": _squad_v2_metrics,
    "math_numeric": _math_numeric_metrics,
}


def compute_metrics(kind: str, scores: list[ItemScore]) -> dict[str, Any]:
    """The dataset's ``metrics`` dict for ``kind`` (keys documented in the per-kind helpers)."""
    _check_kind(kind)
    return _METRICS[kind](list(scores))


def describe(values: list[float] | list[int]) -> dict[str, Any]:
    """sum, mean, median, mode (the first most common), population std and the values themselves."""
    values = [_plain(value) for value in values]
    if not values:
        return {"sum": 0, "mean": None, "median": None, "mode": None, "std": None, "per_prompt": []}
    return {
        "sum": sum(values),
        "mean": float(statistics.fmean(values)),
        "median": float(statistics.median(values)),
        "mode": statistics.mode(values),
        "std": float(statistics.pstdev(values)),
        "per_prompt": values,
    }


def summarize_dataset(
    kind: str, scores: list[ItemScore], latencies_s: list[float], tokens: list[int]
) -> dict[str, Any]:
    """The metrics-file block for one test set: counts, accuracy, format rate, metrics, latency, tokens."""
    _check_kind(kind)
    scores = list(scores)
    for name, values in (("latencies_s", latencies_s), ("tokens", tokens)):
        if len(values) != len(scores):
            raise ValueError(f"{name} has {len(values)} values for {len(scores)} scored items")
    latencies = [float(_plain(value)) for value in latencies_s]
    token_counts = [int(_plain(value)) for value in tokens]
    if any(not math.isfinite(value) or value < 0 for value in latencies):
        raise ValueError(f"latencies_s must be finite and >= 0, got {latencies_s!r}")
    if any(value < 0 for value in token_counts):
        raise ValueError(f"tokens must be >= 0, got {tokens!r}")
    correct = sum(score.correct for score in scores)
    latency = describe(latencies)
    latency["sum"] = float(latency["sum"])
    return {
        "type": kind,
        "total_samples": len(scores),
        "format_success_rate": _ratio(sum(score.has_box for score in scores), len(scores)),
        "correct": correct,
        "incorrect": len(scores) - correct,
        "accuracy": _ratio(correct, len(scores)),
        "metrics": compute_metrics(kind, scores),
        "latency_seconds": latency,
        "tokens_generated": describe(token_counts),
    }
