"""Paired significance tests for two models scored on the same items (TUI and CLI processes).

* :func:`mcnemar_exact` — the exact McNemar test on per-item correctness (accuracy-type metrics).
* :func:`paired_bootstrap` — a paired bootstrap of the difference of any metric (F1, EM, MCC…),
  resampling items with a seeded :class:`numpy.random.Generator`.
* :func:`detectable_difference` / :func:`items_needed` — power of a paired accuracy comparison (normal
  approximation to McNemar's test, Connor 1987).

Conventions: model A is the reference (the first model of a comparison), the delta is
``metric(B) - metric(A)``, and McNemar's ``b`` counts items A got right and B wrong, ``c`` the
reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

import numpy as np

#: Significance level used for the "significant" flag.
ALPHA = 0.05
#: Power asked of a comparison unless told otherwise.
POWER = 0.8
#: Share of items on which two models disagree (one right, the other wrong) assumed when no predictions
#: estimate it: a fine-tune or 4-bit quantization of a model typically flips 10-30 % of items.
DEFAULT_DISCORDANCE = 0.2
#: Resamples per numpy call are capped so one call holds at most this many indexes (memory bound).
_MAX_INDEXES_PER_CHUNK = 2_000_000

#: A metric over resampled items: given per-item arrays indexed into shape ``(resamples, n)``,
#: return one value per resample. See :func:`paired_bootstrap`.
BatchMetric = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: discordant counts, two-sided p-value and the accuracy delta (B - A)."""

    b: int
    c: int
    n: int
    p_value: float
    delta: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap: observed delta (B - A), percentile confidence interval and p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    resamples: int
    seed: int
    n: int

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def mcnemar_p_value(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``.

    Under the null hypothesis each discordant item is equally likely to favour either model, so
    ``min(b, c)`` follows Binomial(b + c, 1/2); the p-value is twice its lower tail, capped at 1.
    With no discordant items the models cannot be told apart and the p-value is 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # Exact integer arithmetic up to the final division: no underflow for large n.
    return min(1.0, 2 * tail / 2 ** n)


def mcnemar_exact(correct_a, correct_b) -> McNemarResult:
    """Exact McNemar test on two aligned per-item correctness vectors (booleans)."""
    a = _as_bool_vector(correct_a, "correct_a")
    b_vec = _as_bool_vector(correct_b, "correct_b")
    if a.shape != b_vec.shape:
        raise ValueError(f"paired vectors differ in length: {a.size} and {b_vec.size} items")
    if a.size == 0:
        raise ValueError("McNemar's test needs at least one item")
    b = int(np.count_nonzero(a & ~b_vec))
    c = int(np.count_nonzero(~a & b_vec))
    return McNemarResult(b=b, c=c, n=int(a.size), p_value=mcnemar_p_value(b, c),
                         delta=(c - b) / a.size)


def paired_bootstrap(metric: BatchMetric, items_a: dict[str, np.ndarray],
                     items_b: dict[str, np.ndarray], *, resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> BootstrapResult:
    """Paired bootstrap of ``metric(B) - metric(A)`` over items.

    ``items_a``/``items_b`` map field names to per-item arrays of the same length ``n`` (item i of
    A is item i of B). Each resample draws ``n`` item indexes with replacement, the same indexes for
    both models; ``metric`` receives ``{field: array[indexes]}`` with arrays of shape
    ``(chunk, n)`` and returns ``(chunk,)`` values.

    The confidence interval is the percentile interval of the resampled deltas. The two-sided
    p-value tests "no difference" by centring the bootstrap distribution on zero:
    ``(1 + #{|d* - d| >= |d|}) / (resamples + 1)``, so it is never exactly 0.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    n = _common_length(items_a, items_b)
    if n == 0:
        raise ValueError("the bootstrap needs at least one item")
    whole = np.arange(n)[None, :]
    observed = float(metric(_take(items_b, whole))[0] - metric(_take(items_a, whole))[0])

    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _MAX_INDEXES_PER_CHUNK // n))
    deltas = np.empty(resamples, dtype=float)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        indexes = rng.integers(0, n, size=(size, n))
        deltas[start:start + size] = metric(_take(items_b, indexes)) - metric(_take(items_a, indexes))

    finite = deltas[np.isfinite(deltas)]
    if finite.size == 0:
        raise ValueError("the metric was undefined on every resample")
    tail = (1 - confidence) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    extreme = np.count_nonzero(np.abs(finite - observed) >= abs(observed) - 1e-12)
    p_value = (1 + extreme) / (finite.size + 1)
    return BootstrapResult(delta=observed, ci_low=float(low), ci_high=float(high),
                           p_value=float(min(1.0, p_value)), confidence=confidence,
                           resamples=resamples, seed=seed, n=n)


def _take(items: dict[str, np.ndarray], indexes: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[indexes] for name, values in items.items()}


def _common_length(items_a: dict[str, np.ndarray], items_b: dict[str, np.ndarray]) -> int:
    lengths = {len(values) for values in (*items_a.values(), *items_b.values())}
    if len(lengths) != 1:
        raise ValueError(f"paired per-item arrays differ in length: {sorted(lengths)}")
    return lengths.pop()


def _as_bool_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of booleans")
    return array.astype(bool)


# --- power of a paired accuracy comparison ---------------------------------------------------------
#
# With n items, discordance psi (share of items where exactly one model is right) and accuracy difference
# delta, McNemar's statistic (c - b) / sqrt(b + c) is approximately normal with mean 0 and variance psi / n
# under "no difference", and mean delta and variance (psi - delta^2) / n otherwise. A two-sided test at
# level alpha then has power 1 - beta when
#     delta * sqrt(n) = z(1 - alpha/2) * sqrt(psi) + z(1 - beta) * sqrt(psi - delta^2)        (Connor 1987)
# which gives the items needed for a difference, and (solved for delta) the smallest detectable difference.

def _z_values(alpha: float, power: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be between 0 and 1, got {power}")
    normal = NormalDist()
    return normal.inv_cdf(1 - alpha / 2), normal.inv_cdf(power)


def _check_discordance(discordance: float) -> None:
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1], got {discordance}")


def detectable_difference(items: int, discordance: float, *, alpha: float = ALPHA,
                          power: float = POWER) -> float | None:
    """The smallest accuracy difference a paired test on ``items`` items detects with ``power``.

    None when no difference is detectable (the solution exceeds the discordance, which bounds it).
    """
    if items < 1:
        raise ValueError(f"items must be at least 1, got {items}")
    _check_discordance(discordance)
    z_alpha, z_beta = _z_values(alpha, power)
    # (n + zb^2) d^2 - 2 za sqrt(psi n) d + (za^2 - zb^2) psi = 0, the larger root.
    inside = items - z_alpha ** 2 + z_beta ** 2
    if inside < 0:
        return None
    delta = math.sqrt(discordance) * (z_alpha * math.sqrt(items) + z_beta * math.sqrt(inside)) / (items + z_beta ** 2)
    return delta if delta <= discordance else None


def items_needed(difference: float, discordance: float, *, alpha: float = ALPHA, power: float = POWER) -> int:
    """Items a paired test needs to detect an accuracy ``difference`` with ``power`` (rounded up)."""
    _check_discordance(discordance)
    if not 0 < difference <= discordance:
        raise ValueError(f"the difference must be above 0 and at most the discordance ({discordance:g}): "
                         f"two models can differ only on the items where they disagree; got {difference}")
    z_alpha, z_beta = _z_values(alpha, power)
    root = z_alpha * math.sqrt(discordance) + z_beta * math.sqrt(discordance - difference ** 2)
    return math.ceil((root / difference) ** 2 - 1e-9)


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), in the input order: the k-th smallest of m p-values
    becomes max over j ≤ k of min(1, (m - j + 1) · p_(j))."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def bh_adjust(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg adjustment (false discovery rate), in the input order: the k-th smallest of m
    p-values becomes min over j ≥ k of min(1, m · p_(j) / j)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 1.0
    for rank in range(len(order) - 1, -1, -1):
        index = order[rank]
        running = min(running, len(p_values) * p_values[index] / (rank + 1))
        adjusted[index] = running
    return adjusted


#: Multiple-comparison corrections by the names study files use (engine.presets.study.CORRECTIONS).
CORRECTIONS = {"holm": holm_adjust, "bh": bh_adjust}
