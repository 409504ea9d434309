"""McNemar's test (hand-computed cases and statsmodels' formulas written out) and reader indices."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from scipy import stats

from covidscan.evaluation.bootstrap import bootstrap_binary_indices
from covidscan.evaluation.readers import (
    compare_with_readers,
    discordant_pairs,
    mcnemar_test,
    reader_indices,
    reader_points,
)


def test_exact_b10_c2_by_hand() -> None:
    # P[X <= 2], X ~ Bin(12, 1/2) = (1 + 12 + 66) / 4096; two-sided doubles it
    res = mcnemar_test(10, 2)
    assert res.method == "exact" and res.statistic == 2
    assert res.p_value == pytest.approx(2 * 79 / 4096)
    assert res.p_value == pytest.approx(0.0385742, abs=1e-7)


def test_exact_symmetric_and_capped_at_one() -> None:
    assert mcnemar_test(3, 3).p_value == 1.0
    assert mcnemar_test(0, 0).p_value == 1.0
    assert mcnemar_test(2, 10).p_value == mcnemar_test(10, 2).p_value
    assert mcnemar_test(0, 5).p_value == pytest.approx(2 / 32)


@pytest.mark.parametrize("b,c", [(1, 4), (7, 3), (12, 11), (0, 24)])
def test_exact_equals_statsmodels_formula(b: int, c: int) -> None:
    # statsmodels mcnemar(exact=True): statistic = min(n1, n2); p = min(1, 2 * binom.cdf(stat, n1 + n2, .5))
    n = b + c
    expected = min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n)
    assert mcnemar_test(b, c).p_value == pytest.approx(expected)


@pytest.mark.parametrize("b,c", [(20, 5), (15, 15), (40, 22), (3, 30)])
def test_chi2_equals_statsmodels_formula(b: int, c: int) -> None:
    # statsmodels mcnemar(exact=False, correction=True): (|n1 - n2| - 1)^2 / (n1 + n2), chi2 1 df
    res = mcnemar_test(b, c)
    assert res.method == "chi2_corrected"
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    assert res.statistic == pytest.approx(stat)
    assert res.p_value == pytest.approx(stats.chi2.sf(stat, 1))
    # chi2 with 1 df is the square of a standard normal
    assert res.p_value == pytest.approx(2 * stats.norm.sf(np.sqrt(stat)))


def test_switch_at_25_discordant_pairs() -> None:
    assert mcnemar_test(20, 4).method == "exact"
    assert mcnemar_test(20, 5).method == "chi2_corrected"
    assert mcnemar_test(20, 5, exact_below=100).method == "exact"


def test_discordant_pairs_on_correctness_and_calls() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    model = np.array([1, 1, 0, 0, 0, 1])
    reader = np.array([1, 0, 1, 1, 0, 1])
    # correctness: model right & reader wrong at 1 and 3; model wrong & reader right at 2
    assert discordant_pairs(y, model, reader) == (2, 1)
    # calls: model positive & reader negative at 1; model negative & reader positive at 2, 3
    assert discordant_pairs(None, model, reader, on="calls") == (1, 2)
    with pytest.raises(ValueError):
        discordant_pairs(None, model, reader)


def test_compare_and_reader_indices() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    model = np.where(rng.uniform(size=60) < 0.9, y, 1 - y)
    reads = {"Rad-5th": np.where(rng.uniform(size=60) < 0.85, y, 1 - y), "Intern": 1 - y}
    table = compare_with_readers(y, model, reads)
    assert set(table) == set(reads)
    assert table["Intern"].p_value < 1e-6  # a reader who is always wrong differs from the model
    b, c = discordant_pairs(y, model, reads["Rad-5th"])
    assert table["Rad-5th"].as_dict()["b"] == b and table["Rad-5th"].c == c
    ci = reader_indices(y, reads, n_resamples=100, seed=0)
    assert ci["Intern"]["sensitivity"].point == 0.0
    # same seed -> the readers' resamples are the model's (paired)
    m = bootstrap_binary_indices(y, y, n_resamples=100, seed=0)
    assert np.all(m["accuracy"].samples == 1.0)
    pts = reader_points(y, reads)
    assert pts["Intern"]["specificity"] == 0.0 and pts["Rad-5th"]["n"] == 60
