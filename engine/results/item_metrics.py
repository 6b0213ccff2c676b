"""Dataset metrics recomputed from per-item predictions, vectorised over bootstrap resamples (TUI and CLI processes).

The predictions files (``Testing/predictions/{model}/{test stem}.jsonl``) hold, per item, ``pred``
(normalised by engine.results.scoring), ``gold`` (as in the dataset), ``correct``, ``has_box`` and (squad_v2)
``f1``. :func:`item_arrays` turns those rows into numpy arrays;
:data:`PAIRED_TESTS` says, per task kind and metric, which paired test applies and how to compute
the metric from the arrays — with the same definitions as :mod:`engine.results.scoring` (checked by tests).

Batch metrics take ``{field: array}`` with arrays of shape ``(resamples, n)`` and return one value
per resample; a metric undefined on a resample (no item of a class) is NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from engine.data.kinds import LM_EVAL_KIND
from engine.data.kinds import BOOL_WORDS, MCQ_LABELS
from engine.results.scoring import NO_ANSWER_PHRASES, normalize_squad, parse_number
from engine.results.stats import BatchMetric

_LETTER_CODES = {label: code for code, label in enumerate(MCQ_LABELS)}
_LETTER_CODES.update({str(code + 1): code for code in range(len(MCQ_LABELS))})


class PredictionsError(ValueError):
    """A predictions row cannot be read for the statistics (names the item and field)."""


def jsonl_objects(path: Path, key: str) -> Iterator[tuple[int, dict[str, Any], int]]:
    """``(line number, object, its integer key)`` for each non-blank line of a JSONL file; PredictionsError
    names the line that is not JSON or has no integer ``key``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionsError(f"cannot read ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise PredictionsError(f"line {number} is not valid JSON ({exc})") from exc
        value = row.get(key) if isinstance(row, dict) else None
        if isinstance(value, bool) or not isinstance(value, int):
            raise PredictionsError(f"line {number} has no integer {key!r}")
        yield number, row, value


@dataclass(frozen=True)
class PairedTest:
    """How one metric is tested: ``mcnemar`` on a per-item correctness vector (optionally on a
    subset of items), or ``bootstrap`` of a batch metric."""

    test: str
    #: mcnemar: items → (correct, subset mask or None)
    correctness: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray | None]] | None = None
    #: bootstrap: the batch metric
    metric: BatchMetric | None = None


def item_arrays(kind: str, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-item arrays for ``kind`` from predictions rows (already ordered by item index)."""
    arrays: dict[str, list[Any]] = {"correct": []}
    for position, row in enumerate(rows):
        where = f"item {row.get('index', position)}"
        arrays["correct"].append(_bool_field(row, "correct", where))
        for name, value in _KIND_FIELDS[kind](row, where).items():
            arrays.setdefault(name, []).append(value)
    result = {name: np.asarray(values) for name, values in arrays.items()}
    if rows and all(isinstance(row.get("has_box"), bool) for row in rows):
        result["has_box"] = np.asarray([row["has_box"] for row in rows])
    return result


# --- per-item fields, by kind --------------------------------------------------------------------

def _mcq4_fields(row: dict[str, Any], where: str) -> dict[str, Any]:
    """Letters as codes 0-3; a missing or unreadable prediction is -1 (wrong for every class)."""
    gold = _letter_code(row.get("gold"))
    if gold < 0:
        raise PredictionsError(f"{where}: gold {row.get('gold')!r} is not one of A-D")
    return {"gold": gold, "pred": _letter_code(row.get("pred"))}


def _boolq_fields(row: dict[str, Any], where: str) -> dict[str, Any]:
    """``pred_true``: the prediction, a missing one counted as the opposite of gold."""
    gold = _as_bool(row.get("gold"))
    if gold is None:
        raise PredictionsError(f"{where}: gold {row.get('gold')!r} is not true/false")
    pred = _as_bool(row.get("pred"))
    return {"gold": gold, "pred_true": (not gold) if pred is None else pred}


def _squad_v2_fields(row: dict[str, Any], where: str) -> dict[str, Any]:
    gold = row.get("gold")
    if isinstance(gold, dict):  # the Hub's {"text": [...], "answer_start": [...]}
        gold = gold.get("text")
    golds = [gold] if isinstance(gold, str) else gold if isinstance(gold, list) else None
    if golds is None or not all(isinstance(g, str) for g in golds):
        raise PredictionsError(f"{where}: gold {gold!r} is not a string or a list of strings")
    has_answer = any(normalize_squad(g) for g in golds)
    pred = row.get("pred")
    answered = pred is not None and normalize_squad(str(pred)) not in NO_ANSWER_PHRASES
    f1 = row.get("f1")
    if f1 is not None and (isinstance(f1, bool) or not isinstance(f1, (int, float))):
        raise PredictionsError(f"{where}: f1 {f1!r} is not a number")
    return {"has_answer": has_answer, "f1": float(f1 or 0.0),
            "avna_correct": pred is not None and answered == has_answer}


def _math_numeric_fields(row: dict[str, Any], where: str) -> dict[str, Any]:
    """``abs_diff``: |pred - gold|, NaN where the prediction is not a number."""
    gold, pred = _as_number(row.get("gold")), _as_number(row.get("pred"))
    if gold is None:
        raise PredictionsError(f"{where}: gold {row.get('gold')!r} is not a number")
    return {"abs_diff": abs(pred - gold) if pred is not None else math.nan}


def _lm_eval_fields(row: dict[str, Any], where: str) -> dict[str, Any]:
    """``metric:NAME``: each per-sample metric lm-evaluation-harness logged (NaN where not a number)."""
    metrics = row.get("metrics")
    if not isinstance(metrics, dict):
        raise PredictionsError(f"{where}: no per-sample metrics")
    return {f"metric:{name}": float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
            else math.nan for name, value in metrics.items()}


_KIND_FIELDS = {
    "mcq4": _mcq4_fields,
    "boolq": _boolq_fields,
    "squad_v2": _squad_v2_fields,
    "math_numeric": _math_numeric_fields,
    LM_EVAL_KIND: _lm_eval_fields,
}


# --- batch metrics ---------------------------------------------------------------------------------

def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)


def _mean_over_present(values: list[np.ndarray], present: list[np.ndarray]) -> np.ndarray:
    weights = np.stack(present).astype(float)
    count = weights.sum(axis=0)
    total = (np.stack(values) * weights).sum(axis=0)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def mcq4_macro_f1(items: dict[str, np.ndarray]) -> np.ndarray:
    """Macro F1 over the letters that occur in gold or predictions (as engine.results.scoring)."""
    gold, pred = items["gold"], items["pred"]
    f1s, present = [], []
    for code in range(len(MCQ_LABELS)):
        is_gold, is_pred = gold == code, pred == code
        tp = np.sum(is_gold & is_pred, axis=-1)
        support, predicted = np.sum(is_gold, axis=-1), np.sum(is_pred, axis=-1)
        f1s.append(_f1(tp, predicted - tp, support - tp))
        present.append((support + predicted) > 0)
    return _mean_over_present(f1s, present)


def _boolq_counts(items: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    gold, pred = items["gold"], items["pred_true"]
    tp = np.sum(gold & pred, axis=-1).astype(float)
    tn = np.sum(~gold & ~pred, axis=-1).astype(float)
    fp = np.sum(~gold & pred, axis=-1).astype(float)
    fn = np.sum(gold & ~pred, axis=-1).astype(float)
    return tp, tn, fp, fn


def boolq_f1(items: dict[str, np.ndarray]) -> np.ndarray:
    """F1 of the positive (True) class."""
    tp, _, fp, fn = _boolq_counts(items)
    return _f1(tp, fp, fn)


def boolq_macro_f1(items: dict[str, np.ndarray]) -> np.ndarray:
    tp, tn, fp, fn = _boolq_counts(items)
    return _mean_over_present([_f1(tp, fp, fn), _f1(tn, fn, fp)],
                              [(tp + fp + fn) > 0, (tn + fp + fn) > 0])


def boolq_balanced_accuracy(items: dict[str, np.ndarray]) -> np.ndarray:
    tp, tn, fp, fn = _boolq_counts(items)
    recall_true = np.divide(tp, tp + fn, out=np.zeros(tp.shape), where=(tp + fn) > 0)
    recall_false = np.divide(tn, tn + fp, out=np.zeros(tn.shape), where=(tn + fp) > 0)
    return _mean_over_present([recall_true, recall_false], [(tp + fn) > 0, (tn + fp) > 0])


def boolq_mcc(items: dict[str, np.ndarray]) -> np.ndarray:
    """Matthews correlation; 0 where a margin is empty (as engine.results.scoring)."""
    tp, tn, fp, fn = _boolq_counts(items)
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.divide(tp * tn - fp * fn, denominator, out=np.zeros(tp.shape), where=denominator > 0)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = mask.sum(axis=-1)
    total = np.where(mask, values, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def squad_em(items: dict[str, np.ndarray]) -> np.ndarray:
    return items["correct"].mean(axis=-1)


def squad_f1(items: dict[str, np.ndarray]) -> np.ndarray:
    return items["f1"].mean(axis=-1)


def squad_has_answer_em(items: dict[str, np.ndarray]) -> np.ndarray:
    return _masked_mean(items["correct"].astype(float), items["has_answer"])


def squad_has_answer_f1(items: dict[str, np.ndarray]) -> np.ndarray:
    return _masked_mean(items["f1"], items["has_answer"])


def math_avg_abs_diff(items: dict[str, np.ndarray]) -> np.ndarray:
    """Mean |pred - gold| over the items with a numeric prediction."""
    diffs = items["abs_diff"]
    return _masked_mean(np.nan_to_num(diffs), ~np.isnan(diffs))


def _all_correct(items: dict[str, np.ndarray]) -> tuple[np.ndarray, None]:
    return items["correct"], None


def _correct_without_answer(items: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return items["correct"], ~items["has_answer"]


def _avna(items: dict[str, np.ndarray]) -> tuple[np.ndarray, None]:
    return items["avna_correct"], None


def _has_box(items: dict[str, np.ndarray]) -> tuple[np.ndarray, None]:
    if "has_box" not in items:
        raise ValueError("the predictions have no per-item has_box field")
    return items["has_box"], None


_MCNEMAR = PairedTest("mcnemar", correctness=_all_correct)
_FORMAT = PairedTest("mcnemar", correctness=_has_box)


def _bootstrap(metric: BatchMetric) -> PairedTest:
    return PairedTest("bootstrap", metric=metric)


#: kind → metric → the paired test that applies to it.
PAIRED_TESTS: dict[str, dict[str, PairedTest]] = {
    "mcq4": {"accuracy": _MCNEMAR, "macro_f1": _bootstrap(mcq4_macro_f1), "format_success_rate": _FORMAT},
    "boolq": {
        "accuracy": _MCNEMAR,
        "f1": _bootstrap(boolq_f1),
        "macro_f1": _bootstrap(boolq_macro_f1),
        "balanced_accuracy": _bootstrap(boolq_balanced_accuracy),
        "mcc": _bootstrap(boolq_mcc),
        "format_success_rate": _FORMAT,
    },
    "squad_v2": {
        "accuracy": _MCNEMAR,
        "EM": _bootstrap(squad_em),
        "F1": _bootstrap(squad_f1),
        "HasAns_EM": _bootstrap(squad_has_answer_em),
        "HasAns_F1": _bootstrap(squad_has_answer_f1),
        "NoAns_accuracy": PairedTest("mcnemar", correctness=_correct_without_answer),
        "AvNA": PairedTest("mcnemar", correctness=_avna),
        "format_success_rate": _FORMAT,
    },
    "math_numeric": {"accuracy": _MCNEMAR, "avg_abs_diff": _bootstrap(math_avg_abs_diff),
                     "format_success_rate": _FORMAT},
}


def paired_test(kind: str | None, metric: str, items: dict[str, np.ndarray] | None) -> PairedTest | None:
    """The paired test of ``metric`` for a task kind; None when there is none.

    lm-evaluation-harness metrics are known only from the samples: a per-sample 0/1 metric (acc,
    exact_match…) gets McNemar's test, any other per-sample number a paired bootstrap of its mean.
    """
    if kind != LM_EVAL_KIND:
        return PAIRED_TESTS.get(kind or "", {}).get(metric)
    key = f"metric:{metric}"
    if items is None or key not in items:
        return None
    values = items[key]
    if np.isin(values, (0.0, 1.0)).all():
        return PairedTest("mcnemar", correctness=lambda arrays: (arrays[key] == 1.0, None))
    if np.isnan(values).any():
        return None
    return PairedTest("bootstrap", metric=lambda arrays: arrays[key].mean(axis=-1))


# --- value readers ---------------------------------------------------------------------------------

def _bool_field(row: dict[str, Any], key: str, where: str) -> bool:
    value = row.get(key)
    if not isinstance(value, bool):
        raise PredictionsError(f"{where}: {key} should be true or false, found {value!r}")
    return value


def _letter_code(value: Any) -> int:
    if not isinstance(value, str):
        return -1
    return _LETTER_CODES.get(value.strip().upper(), -1)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return BOOL_WORDS.get(value.strip().lower())
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return parse_number(value)
    return None
