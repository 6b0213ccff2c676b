"""The task kinds, the metrics their result tables show, and the answer words they use (any process).

Owned here, below both the prompt builder (``engine.data.prompts``) and the scorer
(``engine.results.scoring``), so the data layer never imports results.
"""

from __future__ import annotations

TASK_KINDS = ("mcq4", "boolq", "squad_v2", "math_numeric")

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
