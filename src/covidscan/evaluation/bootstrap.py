"""Bootstrap of the test set: empirical distribution, point estimate and percentile CI of any index.

Liang et al. 2020: "random sampling with replacement to generate 1000 new test data sets with the same number of
samples as the original test data set". Resample indices come from a seeded ``numpy.random.Generator``
(``default_rng(seed)``), so the same ``(n, n_resamples, seed)`` gives the same resamples: the model and
every reader evaluated with the same seed are resampled *paired* (the same cases in each resample).

The interval is the percentile interval: the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the
resampled values. Resamples where an index is undefined (NaN, e.g. no positive case drawn) are left
out of its quantiles; :attr:`BootstrapResult.n_undefined` says how many.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from covidscan.errors import DataError
from covidscan.evaluation.curves import Curve, auroc, auroc_exact, grid_curve, roc_points
from covidscan.evaluation.metrics import (
    BINARY_INDICES,
    binary_indices,
    confusion_counts,
    indices_from_counts,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootstrapResult:
    """One index: its value on the full set and its bootstrap distribution.

    Attributes:
        point: the index on the original (not resampled) set.
        samples: the index on each resample, shape (n_resamples,), NaN where undefined.
        low: lower bound of the percentile interval (NaN if no resample is defined).
        high: upper bound.
        level: the interval's level, e.g. 0.95.
    """

    point: float
    samples: np.ndarray
    low: float
    high: float
    level: float

    @property
    def n_undefined(self) -> int:
        """Resamples where the index was undefined (NaN)."""
        return int(np.isnan(self.samples).sum())

    def as_dict(self) -> dict[str, float]:
        """``{"point", "low", "high", "level", "n_undefined"}`` (no samples)."""
        return {
            "point": float(self.point),
            "low": float(self.low),
            "high": float(self.high),
            "level": float(self.level),
            "n_undefined": self.n_undefined,
        }


def resample_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Indices of ``n_resamples`` resamples of ``n`` cases drawn with replacement.

    Args:
        n: number of cases.
        n_resamples: number of resamples (``EvaluateConfig.bootstrap``).
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        Integer array of shape (n_resamples, n).
    """
    if n < 1:
        raise DataError("bootstrap needs at least one case")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n))


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the defined (non-NaN) samples.

    Args:
        samples: resampled values.
        level: interval level.

    Returns:
        (low, high); (NaN, NaN) when no sample is defined.
    """
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(s, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _result(point: float, samples: np.ndarray, level: float) -> BootstrapResult:
    low, high = percentile_interval(samples, level)
    return BootstrapResult(
        point=float(point), samples=np.asarray(samples, float), low=low, high=high, level=level
    )


def bootstrap(
    statistic: Callable[..., float | Mapping[str, float]],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    vectorised: bool = False,
) -> dict[str, BootstrapResult]:
    """Bootstrap any statistic of one or more paired arrays (resampled together along axis 0).

    Args:
        statistic: function of the arrays returning a number or a dict name -> number. With
            ``vectorised=True`` it receives arrays with a leading resample axis, shape (B, n, ...), and
            returns arrays of shape (B,) (or a dict of them).
        *arrays: arrays of one length n (e.g. ``y_true, scores``).
        n_resamples: number of resamples.
        seed: generator seed.
        level: CI level.
        vectorised: whether ``statistic`` handles a batch of resamples at once.

    Returns:
        Name -> :class:`BootstrapResult`; a plain-number statistic is named ``"value"``. A statistic
        that raises ``ValueError``/``DataError`` on a resample counts as undefined (NaN) there.
    """
    arrs = [np.asarray(a) for a in arrays]
    if not arrs:
        raise ValueError("bootstrap needs at least one array")
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise DataError("bootstrap: arrays differ in length")

    def as_dict(value: float | Mapping[str, float]) -> dict[str, float]:
        return dict(value) if isinstance(value, Mapping) else {"value": value}

    point = as_dict(statistic(*arrs))
    idx = resample_indices(n, n_resamples, seed)
    if vectorised:
        batch = as_dict(statistic(*(a[idx] for a in arrs)))
        samples = {k: np.asarray(v, dtype=float).reshape(n_resamples) for k, v in batch.items()}
    else:
        samples = {k: np.full(n_resamples, np.nan) for k in point}
        for b in range(n_resamples):
            try:
                value = as_dict(statistic(*(a[idx[b]] for a in arrs)))
            except (ValueError, DataError):
                continue
            for k in point:
                samples[k][b] = value[k]
    return {k: _result(point[k], samples[k], level) for k in point}


def bootstrap_binary_indices(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, BootstrapResult]:
    """Bootstrap every binary index of hard calls (vectorised over resamples).

    Args:
        y_true: labels 0/1, shape (n,).
        y_pred: calls 0/1, shape (n,).
        n_resamples: number of resamples.
        seed: generator seed (use one seed for the model and the readers to pair them).
        level: CI level.

    Returns:
        Index name (sensitivity, specificity, precision, f1, kappa, accuracy) -> result.
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    point = binary_indices(t, p)
    idx = resample_indices(t.size, n_resamples, seed)
    batch = indices_from_counts(confusion_counts(t[idx], p[idx]))
    return {k: _result(point[k], batch[k], level) for k in BINARY_INDICES}


def auroc_batch(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Exact AUROC (Mann-Whitney, ties count 1/2) of each row of a batch, vectorised.

    The batched form of :func:`covidscan.evaluation.curves.auroc_exact` (equal to it on every row).

    Args:
        y_true: labels 0/1, shape (B, n).
        scores: scores, shape (B, n).

    Returns:
        Array (B,); NaN for rows with one class only.
    """
    t = np.asarray(y_true).astype(bool)
    ranks = stats.rankdata(np.asarray(scores, dtype=float), axis=-1)  # average ranks for ties
    n_pos = t.sum(-1).astype(float)
    n_neg = t.shape[-1] - n_pos
    u = np.where(t, ranks, 0.0).sum(-1) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def bootstrap_auroc(
    y_true: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapResult:
    """Bootstrap the exact AUROC, vectorised (resamples with one class only are undefined).

    Args:
        y_true: labels 0/1.
        scores: positive-class scores.
        n_resamples: number of resamples.
        seed: generator seed.
        level: CI level.

    Returns:
        The result (point = :func:`~covidscan.evaluation.curves.auroc_exact` on the full set).
    """
    t = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=float)
    point = auroc_exact(t, s)
    idx = resample_indices(t.size, n_resamples, seed)
    return _result(point, auroc_batch(t[idx], s[idx]), level)


@dataclass(frozen=True)
class RocBand:
    """ROC with a pointwise bootstrap band (Yao et al. 2021: "ROC curve with a 95% CI").

    Attributes:
        fpr: common fpr grid (0..1).
        tpr: the ROC of the full set interpolated on ``fpr``.
        low: lower band per fpr.
        high: upper band per fpr.
        auc: grid AUROC of the full set, with its bootstrap interval.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    low: np.ndarray
    high: np.ndarray
    auc: BootstrapResult


def _interp_roc(curve_fpr: np.ndarray, curve_tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    # the ROC polyline is monotone; for repeated fpr keep the highest tpr (upper envelope)
    order = np.lexsort((curve_tpr, curve_fpr))
    f, t = curve_fpr[order], curve_tpr[order]
    uniq, first = np.unique(f, return_index=True)
    last = np.r_[first[1:] - 1, f.size - 1]
    return np.interp(grid, uniq, t[last])


def grid_counts_batch(
    y_true: np.ndarray, scores: np.ndarray, idx: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP at every grid threshold for every resample at once (no Python loop).

    Each score falls in the grid cell ``thresholds[k] <= score < thresholds[k + 1]``; the counts at
    threshold j are the cases in cells >= j (reverse cumulative sums of per-cell counts).

    Args:
        y_true: labels 0/1, shape (n,).
        scores: scores, shape (n,).
        idx: resample indices, shape (B, n).
        thresholds: ascending grid starting at 0.

    Returns:
        (tp, fp), each of shape (B, len(thresholds)).
    """
    t = np.asarray(y_true).astype(bool)
    cell = np.clip(
        np.searchsorted(thresholds, np.asarray(scores, float), side="right") - 1, 0, None
    )
    n_res, n_cells = idx.shape[0], thresholds.size
    flat = (np.arange(n_res)[:, None] * n_cells + cell[idx]).ravel()
    pos = np.bincount(flat, weights=t[idx].ravel().astype(float), minlength=n_res * n_cells)
    allc = np.bincount(flat, minlength=n_res * n_cells).astype(float)
    pos = pos.reshape(n_res, n_cells)
    neg = allc.reshape(n_res, n_cells) - pos
    tp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1]
    fp = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]
    return tp.astype(np.int64), fp.astype(np.int64)


def roc_with_ci(
    y_true: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    step: float = 0.005,
    n_fpr: int = 101,
) -> RocBand:
    """ROC with a pointwise percentile band over bootstrap resamples, and the AUROC with its CI.

    Each resample's grid ROC is interpolated at ``n_fpr`` fixed false-positive rates; the band is the
    percentile interval of the sensitivities at each rate. Resamples missing a class are skipped.

    Args:
        y_true: labels 0/1.
        scores: positive-class scores.
        n_resamples: number of resamples.
        seed: generator seed.
        level: CI level.
        step: threshold grid step.
        n_fpr: points of the common fpr grid.

    Returns:
        The :class:`RocBand`.
    """
    t = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    grid = np.linspace(0.0, 1.0, n_fpr)
    full = grid_curve(t, s, step)
    tpr_full = _interp_roc(*roc_points(full), grid)
    idx = resample_indices(t.size, n_resamples, seed)
    thresholds = full.thresholds
    tp, fp = grid_counts_batch(t, s, idx, thresholds)
    n_pos = t[idx].sum(1)
    n_neg = t.size - n_pos
    tprs = np.full((n_resamples, n_fpr), np.nan)
    aucs = np.full(n_resamples, np.nan)
    for b in np.flatnonzero((n_pos > 0) & (n_neg > 0)):
        curve = Curve(
            thresholds=thresholds, tp=tp[b], fp=fp[b], n_pos=int(n_pos[b]), n_neg=int(n_neg[b])
        )
        tprs[b] = _interp_roc(*roc_points(curve), grid)
        aucs[b] = auroc(curve)
    ok = np.isfinite(aucs)
    alpha = (1.0 - level) / 2.0
    if ok.any():
        low, high = np.quantile(tprs[ok], [alpha, 1.0 - alpha], axis=0)
    else:
        low = high = np.full(n_fpr, np.nan)
    return RocBand(
        fpr=grid, tpr=tpr_full, low=low, high=high, auc=_result(auroc(full), aucs, level)
    )
