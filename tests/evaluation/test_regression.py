"""Regression indices against scikit-learn/scipy, and the critical r."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from covidscan.errors import DataError
from covidscan.evaluation.regression import (
    correlation_significance,
    critical_r,
    indicator_significance,
    pearson_r,
    regression_indices,
    regression_report,
)

INDICATORS = ["wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp"]


def _pairs(seed: int, shape=(20, 5)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=shape)
    return t, np.clip(t + rng.normal(0, 0.12, shape), 0, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_indices_equal_sklearn_and_scipy(seed: int) -> None:
    t, p = _pairs(seed)
    rep = regression_report(t, p, INDICATORS)
    o = rep["pooled"]
    assert o["mse"] == pytest.approx(mean_squared_error(t, p))
    assert o["rmse"] == pytest.approx(np.sqrt(mean_squared_error(t, p)))
    assert o["mae"] == pytest.approx(mean_absolute_error(t, p))
    assert o["r2"] == pytest.approx(r2_score(t.ravel(), p.ravel()))
    assert o["r"] == pytest.approx(stats.pearsonr(t.ravel(), p.ravel())[0])
    assert o["n"] == 100
    for j, name in enumerate(INDICATORS):
        assert rep[name]["r2"] == pytest.approx(r2_score(t[:, j], p[:, j]))
        assert rep[name]["r"] == pytest.approx(stats.pearsonr(t[:, j], p[:, j])[0])
        assert rep[name]["mse"] == pytest.approx(mean_squared_error(t[:, j], p[:, j]))
        assert rep[name]["mae"] == pytest.approx(mean_absolute_error(t[:, j], p[:, j]))


def test_degenerate_cases() -> None:
    assert np.isnan(regression_indices([1.0, 1.0, 1.0], [0.9, 1.0, 1.1])["r2"])
    assert np.isnan(pearson_r([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    with pytest.raises(DataError):
        regression_indices([1.0, 2.0], [1.0])
    with pytest.raises(DataError):
        regression_report(*_pairs(0), names=["a"])


def test_critical_r_textbook_values() -> None:
    assert critical_r(20, 0.001) == pytest.approx(0.6788, abs=5e-5)
    # the paper's 0.6524 at alpha 0.001 is the value for 20 degrees of freedom: n = 22 pairs
    assert critical_r(22, 0.001) == pytest.approx(0.6524, abs=5e-5)
    assert critical_r(12, 0.05) == pytest.approx(0.5760, abs=5e-5)
    assert critical_r(102, 0.01) == pytest.approx(0.2540, abs=5e-4)


def test_critical_r_is_where_pearsonr_p_equals_alpha() -> None:
    for n, alpha in [(10, 0.05), (22, 0.001), (50, 0.01)]:
        rc = critical_r(n, alpha)
        sig = correlation_significance(rc, n, alpha)
        assert sig["p_value"] == pytest.approx(alpha, rel=1e-6)


def test_paper_ratio_and_p_value_match_pearsonr() -> None:
    sig = correlation_significance(0.8274, 22, 0.001)
    assert sig["ratio"] == pytest.approx(1.27, abs=0.005) and sig["significant"]
    t, p = _pairs(3, shape=(25,))
    r, p_value = stats.pearsonr(t, p)
    sig = correlation_significance(r, 25)
    assert sig["p_value"] == pytest.approx(p_value, rel=1e-6)
    assert not correlation_significance(0.3, 22)["significant"]
    with pytest.raises(DataError):
        critical_r(2)


def test_significance_is_per_indicator_with_n_cases_and_the_pooled_r_apart() -> None:
    """The paper's critical r 0.6524 (alpha 0.001, 20 df) comes from 22 cases per indicator, not 22 x 5 pairs."""
    rng = np.random.default_rng(5)
    t = rng.uniform(size=(22, 5))
    p = t.copy()
    p[:, 0] = t[:, 0] + rng.normal(0, 0.02, 22)  # r ~ 1: significant
    p[:, 1] = rng.uniform(size=22)  # unrelated: not significant
    rep = regression_report(t, p, INDICATORS)
    sig = indicator_significance(rep, 0.001)
    assert list(sig) == [*INDICATORS, "pooled"]
    for name in INDICATORS:
        assert sig[name]["n"] == 22 and sig[name]["r_critical"] == pytest.approx(0.6524, abs=5e-5)
        assert sig[name]["r"] == pytest.approx(stats.pearsonr(t[:, INDICATORS.index(name)], p[:, INDICATORS.index(name)])[0])
        assert sig[name]["significant"] == (abs(sig[name]["r"]) > 0.6524)
        assert "pooled" not in sig[name]
    assert sig["wbc"]["significant"] and not sig["neutrophil_pct"]["significant"]
    pooled = sig["pooled"]
    assert pooled["pooled"] is True and pooled["n"] == 110 and pooled["r"] == pytest.approx(rep["pooled"]["r"])
    assert pooled["r_critical"] == pytest.approx(critical_r(110, 0.001)) and pooled["r_critical"] < 0.35


def test_significance_with_too_few_cases_says_why() -> None:
    t, p = _pairs(0, shape=(2, 5))
    sig = indicator_significance(regression_report(t, p, INDICATORS), 0.001)
    assert not sig["wbc"]["significant"] and np.isnan(sig["wbc"]["r_critical"]) and "more than 2" in sig["wbc"]["note"]
    assert sig["pooled"]["n"] == 10 and np.isfinite(sig["pooled"]["r_critical"])
    with pytest.raises(DataError, match="pooled"):
        regression_report(t[:, :1], p[:, :1], ["pooled"])
