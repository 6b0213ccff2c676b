"""engine.results.stats: exact McNemar against hand-computed values and scipy; the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from engine.results.stats import mcnemar_exact, mcnemar_p_value, paired_bootstrap


def _mean_of(field):
    return lambda items: items[field].mean(axis=-1)


# --- McNemar -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("b", "c", "expected"), [
    (1, 6, 0.125),         # 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
    (0, 5, 0.0625),        # 2 * 1 / 32
    (0, 6, 0.03125),       # 2 * 1 / 64: the smallest n with p < 0.05
    (2, 8, 0.109375),      # 2 * (1 + 10 + 45) / 1024 = 112 / 1024
    (5, 5, 1.0),           # balanced: capped at 1
    (0, 0, 1.0),           # no discordant items: nothing to tell apart
    (3, 0, 0.25),          # symmetric in b and c
])
def test_mcnemar_hand_computed(b, c, expected):
    assert mcnemar_p_value(b, c) == pytest.approx(expected, abs=1e-15)


def test_mcnemar_matches_scipy_binomtest():
    for b in range(0, 40, 3):
        for c in range(0, 40, 4):
            if b + c == 0:
                continue
            expected = scipy_stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
            assert mcnemar_p_value(b, c) == pytest.approx(expected, rel=1e-12), (b, c)


def test_mcnemar_large_counts_do_not_underflow():
    expected = scipy_stats.binomtest(480, 1000, 0.5).pvalue
    assert mcnemar_p_value(480, 520) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_p_value(0, 1000) == 2.0 ** -999  # exact integers, one division at the end


def test_mcnemar_from_correctness_vectors():
    # 10 items: both right on 3, both wrong on 0, A only on 1 (b), B only on 6 (c).
    a = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
    result = mcnemar_exact(np.array(a, bool), np.array(b, bool))
    assert (result.b, result.c, result.n) == (1, 6, 10)
    assert result.p_value == pytest.approx(0.125)
    assert result.delta == pytest.approx(0.5)  # 0.9 - 0.4
    assert not result.significant


def test_mcnemar_significant_flag():
    a = np.zeros(20, bool)
    b = np.ones(20, bool)
    result = mcnemar_exact(a, b)
    assert result.c == 20 and result.p_value < 0.05 and result.significant


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError, match="at least one item"):
        mcnemar_exact([], [])
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_p_value(-1, 3)


# --- paired bootstrap --------------------------------------------------------------------------

def test_bootstrap_two_items_hand_computed():
    # Per-item differences d = [0, 1]: a resample's mean difference is 0, 0.5 or 1 with
    # probabilities 1/4, 1/2, 1/4. The 95 % percentile interval is [0, 1]; the centred test counts
    # |d* - 0.5| >= 0.5, i.e. d* in {0, 1}: p = 1/2.
    a = {"x": np.array([0.0, 0.0])}
    b = {"x": np.array([0.0, 1.0])}
    result = paired_bootstrap(_mean_of("x"), a, b, resamples=20_000, seed=1)
    assert result.delta == pytest.approx(0.5)
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)
    assert result.p_value == pytest.approx(0.5, abs=0.02)
    assert not result.significant


def test_bootstrap_constant_difference_is_certain():
    a = {"x": np.zeros(50)}
    b = {"x": np.ones(50)}
    result = paired_bootstrap(_mean_of("x"), a, b, resamples=1000, seed=0)
    assert (result.delta, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)
    assert result.p_value == pytest.approx(1 / 1001)  # never exactly zero
    assert result.significant


def test_bootstrap_no_difference_gives_p_one():
    values = {"x": np.linspace(0, 1, 30)}
    result = paired_bootstrap(_mean_of("x"), values, dict(values), resamples=1000, seed=0)
    assert result.delta == 0 and result.p_value == 1.0 and not result.significant


def test_bootstrap_interval_contains_true_delta():
    # Per-item scores with a known population difference of 0.1 in mean F1.
    rng = np.random.default_rng(123)
    n = 2000
    base = rng.uniform(0, 1, n)
    a = {"f1": base}
    b = {"f1": np.clip(base + rng.normal(0.1, 0.05, n), -10, 10)}
    result = paired_bootstrap(_mean_of("f1"), a, b, resamples=2000, seed=7)
    assert result.ci_low < 0.1 < result.ci_high
    assert result.ci_high - result.ci_low < 0.01
    assert result.significant


def test_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(5)
    x = rng.normal(0.6, 0.2, 300)
    y = x + rng.normal(0.03, 0.1, 300)
    ours = paired_bootstrap(_mean_of("v"), {"v": x}, {"v": y}, resamples=5000, seed=3)
    theirs = scipy_stats.bootstrap((x, y), lambda u, v, axis=-1: v.mean(axis=axis) - u.mean(axis=axis),
                                   paired=True, vectorized=True, n_resamples=5000,
                                   method="percentile", random_state=np.random.default_rng(9))
    assert ours.ci_low == pytest.approx(theirs.confidence_interval.low, abs=0.003)
    assert ours.ci_high == pytest.approx(theirs.confidence_interval.high, abs=0.003)


def test_bootstrap_is_deterministic_for_a_seed_and_chunking_preserves_it():
    rng = np.random.default_rng(0)
    a = {"x": rng.uniform(size=40)}
    b = {"x": rng.uniform(size=40)}
    first = paired_bootstrap(_mean_of("x"), a, b, resamples=1500, seed=42)
    again = paired_bootstrap(_mean_of("x"), a, b, resamples=1500, seed=42)
    other = paired_bootstrap(_mean_of("x"), a, b, resamples=1500, seed=43)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_bootstrap_uses_the_same_indexes_for_both_models():
    # Identical per-item values for A and B plus a constant: a paired resample keeps the delta
    # constant; an unpaired one would spread it.
    rng = np.random.default_rng(2)
    x = rng.uniform(size=100)
    result = paired_bootstrap(_mean_of("x"), {"x": x}, {"x": x + 0.25}, resamples=1000, seed=0)
    assert result.ci_low == pytest.approx(0.25) and result.ci_high == pytest.approx(0.25)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap(_mean_of("x"), {"x": np.zeros(3)}, {"x": np.zeros(4)})
    with pytest.raises(ValueError, match="at least 1"):
        paired_bootstrap(_mean_of("x"), {"x": np.zeros(3)}, {"x": np.zeros(3)}, resamples=0)
    with pytest.raises(ValueError, match="at least one item"):
        paired_bootstrap(_mean_of("x"), {"x": np.zeros(0)}, {"x": np.zeros(0)})
