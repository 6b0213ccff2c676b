"""The task kinds, the metrics their result tables show (THE headline metric among them), and the answer words
they use (any process).

Owned here, below both the prompt builder (``engine.data.prompts``) and the scorer
(``engine.results.scoring``), so the data layer never imports results.
"""

from __future__ import annotations

from typing import Iterable

TASK_KINDS = ("mcq4", "boolq", "squad_v2", "math_numeric")
#: The task kind of lm-evaluation-harness results (engine.results.lmeval); their per-sample metrics are
#: compared with the same paired tests as llmtui's.
LM_EVAL_KIND = "lm-eval"

#: The metric keys in ``compute_metrics`` output that result tables show per kind, the main one first.
TABLE_METRICS = {"mcq4": ("macro_f1", "accuracy"), "boolq": ("accuracy", "mcc"), "squad_v2": ("F1", "EM"),
                 "math_numeric": ("accuracy", "avg_abs_diff")}
#: THE headline-metric map: the main metric key per kind (shown first by the UI).
HEADLINE_METRICS = {kind: metrics[0] for kind, metrics in TABLE_METRICS.items()}

MCQ_LABELS = ("A", "B", "C", "D")
#: Numbered options (1-4) → their letters.
DIGIT_TO_LETTER = {str(i + 1): label for i, label in enumerate(MCQ_LABELS)}

#: THE boolean answer words (lower case) and what they mean.
BOOL_WORDS = {"true": True, "yes": True, "false": False, "no": False}


def headline_metric(kind: str | None, metrics: Iterable[str] = ()) -> str | None:
    """THE metric a test set is summarised by, for any kind (never raises): a built-in kind's headline — or,
    when ``metrics`` (the names a result has) lacks it, the first of the kind's table metrics it has (old
    math files hold only ``avg_abs_diff``); lm-eval's ``acc``, else its first metric (None when it has none);
    ``accuracy`` for a kind this version does not know."""
    names = list(metrics)
    if kind == LM_EVAL_KIND:
        return "acc" if "acc" in names else (names[0] if names else None)
    headline = HEADLINE_METRICS.get(kind or "", "accuracy")
    if names and headline not in names:
        return next((m for m in TABLE_METRICS.get(kind or "", ()) if m in names), headline)
    return headline
