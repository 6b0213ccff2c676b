"""Multiple-comparison corrections and Pareto flags, against values worked out by hand."""

from __future__ import annotations

import pytest

from engine.results.stats import bh_adjust, holm_adjust
from engine.jobs.study_table import pareto_flags


def test_holm_and_benjamini_hochberg_match_their_definitions():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted 0.005·4/1 = 0.02, 0.01·4/2 = 0.02, 0.03·4/3 = 0.04, 0.04·4/4 = 0.04 → running min from the top
    assert bh_adjust(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm_adjust([0.5, 0.9]) == [1.0, 1.0] and holm_adjust([]) == []


def test_pareto_flags_keep_the_undominated_and_ties():
    points = [(0.9, 100), (0.8, 50), (0.8, 60), (0.95, 200), (0.9, 100), (None, 10), (0.5, None)]
    assert pareto_flags(points) == [True, True, False, True, True, False, False]
