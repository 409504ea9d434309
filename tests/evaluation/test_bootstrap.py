"""Bootstrap: reproducibility, vectorised == loop, coverage of a known value, ROC band, boxplots."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from covidscan.evaluation.bootstrap import (
    bootstrap,
    bootstrap_auroc,
    bootstrap_binary_indices,
    percentile_interval,
    resample_indices,
    roc_with_ci,
)
from covidscan.evaluation.metrics import binary_indices
from covidscan.visualize import plot_boxplots, plot_roc_band


def _binary(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    return y, s, (s >= 0.5).astype(int)


def test_resamples_are_seeded_and_in_range() -> None:
    a = resample_indices(30, 50, seed=7)
    assert a.shape == (50, 30) and a.min() >= 0 and a.max() < 30
    assert np.array_equal(a, resample_indices(30, 50, seed=7))
    assert not np.array_equal(a, resample_indices(30, 50, seed=8))


def test_vectorised_binary_bootstrap_equals_the_loop() -> None:
    y, _, pred = _binary(0)
    fast = bootstrap_binary_indices(y, pred, n_resamples=200, seed=3)
    slow = bootstrap(binary_indices, y, pred, n_resamples=200, seed=3)
    for k, res in fast.items():
        assert res.point == pytest.approx(binary_indices(y, pred)[k])
        np.testing.assert_allclose(res.samples, slow[k].samples, equal_nan=True)
        assert (res.low, res.high) == pytest.approx((slow[k].low, slow[k].high), nan_ok=True)
        assert res.low <= res.point <= res.high


def test_vectorised_generic_statistic_equals_the_loop() -> None:
    x = np.random.default_rng(1).normal(size=40)
    loop = bootstrap(np.mean, x, n_resamples=300, seed=2)["value"]
    vec = bootstrap(lambda a: a.mean(-1), x, n_resamples=300, seed=2, vectorised=True)["value"]
    np.testing.assert_allclose(loop.samples, vec.samples)
    assert loop.point == pytest.approx(x.mean())


def test_percentile_interval_and_undefined_samples() -> None:
    s = np.r_[np.arange(100.0), [np.nan] * 5]
    low, high = percentile_interval(s, 0.9)
    assert (low, high) == pytest.approx(tuple(np.quantile(np.arange(100.0), [0.05, 0.95])))
    assert percentile_interval(np.full(3, np.nan)) == pytest.approx((np.nan, np.nan), nan_ok=True)
    # a tiny set where some resamples have no positive case: sensitivity undefined there
    res = bootstrap_binary_indices([1, 0, 0, 0, 0], [1, 0, 0, 1, 0], n_resamples=200, seed=0)
    assert 0 < res["sensitivity"].n_undefined < 200
    assert res["sensitivity"].as_dict()["n_undefined"] == res["sensitivity"].n_undefined


def test_percentile_ci_covers_a_bernoulli_mean_about_95_percent() -> None:
    p_true, n, reps = 0.3, 80, 200
    rng = np.random.default_rng(12345)
    covered = 0
    for rep in range(reps):
        x = (rng.uniform(size=n) < p_true).astype(float)
        res = bootstrap(lambda a: a.mean(-1), x, n_resamples=500, seed=rep, vectorised=True)[
            "value"
        ]
        covered += res.low <= p_true <= res.high
    assert 0.90 <= covered / reps <= 0.99


def test_bootstrap_auroc_contains_point() -> None:
    y, s, _ = _binary(4, n=80)
    res = bootstrap_auroc(y, s, n_resamples=100, seed=0)
    assert res.point == pytest.approx(roc_auc_score(y, s))
    assert res.low < res.point < res.high


def test_roc_band_and_plots(tmp_path) -> None:
    y, s, pred = _binary(5, n=80)
    band = roc_with_ci(y, s, n_resamples=100, seed=0)
    assert band.fpr.shape == band.tpr.shape == band.low.shape == band.high.shape == (101,)
    assert np.all(band.low <= band.high + 1e-12)
    assert np.mean((band.low <= band.tpr + 1e-9) & (band.tpr <= band.high + 1e-9)) > 0.9
    assert band.auc.low < band.auc.point < band.auc.high
    assert plot_roc_band(band, tmp_path / "band.png").stat().st_size > 1000
    model = bootstrap_binary_indices(y, pred, n_resamples=100, seed=0)
    reader = bootstrap_binary_indices(y, 1 - pred, n_resamples=100, seed=0)
    out = plot_boxplots({"CNNCF": model, "Intern": reader}, tmp_path / "box.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_and_batched_auroc_equal_sklearn_with_ties(seed: int) -> None:
    from covidscan.evaluation.bootstrap import auroc_batch
    from covidscan.evaluation.curves import auroc_exact

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    s = rng.integers(0, 6, 40) / 5  # heavy ties, within and across the classes
    assert auroc_exact(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    idx = resample_indices(y.size, 200, seed=seed)
    aucs = auroc_batch(y[idx], s[idx])
    for b in range(idx.shape[0]):
        yb, sb = y[idx[b]], s[idx[b]]
        if 0 < yb.sum() < yb.size:
            assert aucs[b] == pytest.approx(roc_auc_score(yb, sb), abs=1e-12)
            assert aucs[b] == pytest.approx(auroc_exact(yb, sb), abs=1e-12)
        else:
            assert np.isnan(aucs[b]) and np.isnan(auroc_exact(yb, sb))


def test_batched_auroc_and_grid_counts_equal_per_resample_versions() -> None:
    from covidscan.evaluation.bootstrap import auroc_batch, grid_counts_batch
    from covidscan.evaluation.curves import grid_curve

    y, s, _ = _binary(6, n=50)
    s = np.round(s, 2)  # ties, and scores exactly on grid thresholds
    idx = resample_indices(y.size, 30, seed=1)
    aucs = auroc_batch(y[idx], s[idx])
    tp, fp = grid_counts_batch(y, s, idx, grid_curve(y, s).thresholds)
    for b in range(30):
        yb, sb = y[idx[b]], s[idx[b]]
        assert aucs[b] == pytest.approx(roc_auc_score(yb, sb))
        curve = grid_curve(yb, sb)
        assert np.array_equal(tp[b], curve.tp) and np.array_equal(fp[b], curve.fp)
    assert np.isnan(auroc_batch(np.ones((1, 5)), np.zeros((1, 5)))[0])
