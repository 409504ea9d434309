"""ROC and precision-recall curves on a fixed threshold grid, calibration and threshold choice.

The papers sweep the threshold from 0 to 1 in steps of 0.005 (``EvaluateConfig.threshold_step``);
the curves here do the same, so a curve is one point per grid threshold (a call is positive when
``score >= threshold``). Areas:

- AUROC (grid): trapezoidal area under the grid ROC, closed with (0, 0) and (1, 1). It differs from the
  exact (Mann-Whitney) AUROC only by pairs whose scores share a grid cell, which it counts as ties;
  :func:`auroc_exact` gives the exact value. It is the project's one exact AUROC (training's validation
  AUROC and the training stages use it too); its batched form for the bootstrap is
  :func:`covidscan.evaluation.bootstrap.auroc_batch`.
- AUPRC (grid): average precision, ``sum_k (R_k - R_{k-1}) P_k`` over the grid in increasing recall
  (scikit-learn's ``average_precision_score`` definition, no interpolation); :func:`auprc_exact` gives
  the exact value. ``pr_auc_trapezoid`` is the trapezoidal area under the grid PR curve.

The figures of these curves are drawn by :mod:`covidscan.visualize` (this module does not import
matplotlib).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from covidscan.errors import DataError
from covidscan.evaluation.metrics import indices_at_threshold, ratio

log = logging.getLogger(__name__)

ISO_F1_LEVELS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class Curve:
    """Counts and rates at each grid threshold (ascending thresholds).

    Attributes:
        thresholds: grid thresholds, ascending from 0 to 1.
        tp: true positives at each threshold.
        fp: false positives at each threshold.
        n_pos: number of positive cases.
        n_neg: number of negative cases.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def tpr(self) -> np.ndarray:
        """Sensitivity (recall) per threshold; NaN when there is no positive case."""
        return ratio(self.tp, self.n_pos)

    @property
    def fpr(self) -> np.ndarray:
        """1 - specificity per threshold; NaN when there is no negative case."""
        return ratio(self.fp, self.n_neg)

    @property
    def precision(self) -> np.ndarray:
        """Precision per threshold; NaN where nothing is called positive."""
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        """Alias of :attr:`tpr`."""
        return self.tpr


def threshold_grid(step: float = 0.005) -> np.ndarray:
    """Thresholds 0, step, 2 step, ..., 1 (1 included).

    Args:
        step: grid step (``EvaluateConfig.threshold_step``); 1/step should be an integer.

    Returns:
        Ascending float array; 201 values for the default step.
    """
    n = int(round(1.0 / step))
    if n < 1 or abs(n * step - 1.0) > 1e-9:
        raise DataError(f"evaluate.threshold_step: 1/step must be a whole number, got step={step}")
    # k / n is the double nearest to the decimal k * step, so a score of exactly 0.035 meets the
    # threshold 0.035 (np.linspace can be off by one ulp)
    return np.arange(n + 1) / n


def _check_binary(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    s = np.asarray(scores, dtype=float)
    if t.shape != s.shape or t.ndim != 1:
        raise DataError(f"y_true and scores must be 1D of one length, got {t.shape} and {s.shape}")
    if t.size and not np.isin(t, (0, 1)).all():
        raise DataError("y_true: expected binary labels 0/1")
    if not np.isfinite(s).all():
        raise DataError("scores: NaN or infinite values")
    return t.astype(bool), s


def grid_curve(y_true: np.ndarray, scores: np.ndarray, step: float = 0.005) -> Curve:
    """Confusion counts at every grid threshold (sorting, O(n log n + grid)).

    Args:
        y_true: labels 0/1, shape (n,).
        scores: positive-class scores, shape (n,).
        step: grid step.

    Returns:
        The :class:`Curve`.
    """
    t, s = _check_binary(y_true, scores)
    thresholds = threshold_grid(step)
    pos = np.sort(s[t])
    neg = np.sort(s[~t])
    # number of scores >= thr = n - (number of scores < thr)
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    return Curve(thresholds=thresholds, tp=tp, fp=fp, n_pos=int(pos.size), n_neg=int(neg.size))


def roc_points(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """ROC polyline (fpr, tpr) in increasing fpr, closed with (0, 0) and (1, 1).

    Args:
        curve: a grid curve with positives and negatives.

    Returns:
        (fpr, tpr) arrays.
    """
    if curve.n_pos == 0 or curve.n_neg == 0:
        raise DataError("ROC needs at least one positive and one negative case")
    fpr = np.concatenate([[0.0], curve.fpr[::-1], [1.0]])
    tpr = np.concatenate([[0.0], curve.tpr[::-1], [1.0]])
    return fpr, tpr


def auroc(curve: Curve) -> float:
    """Trapezoidal area under the grid ROC curve.

    Args:
        curve: a grid curve.

    Returns:
        AUROC in [0, 1].
    """
    fpr, tpr = roc_points(curve)
    return float(np.trapezoid(tpr, fpr))


def auroc_exact(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Exact AUROC: scikit-learn's ``roc_auc_score``, the Mann-Whitney statistic with ties counted 1/2.

    Args:
        y_true: labels 0/1 (or booleans).
        scores: positive-class scores (finite).

    Returns:
        The AUROC; NaN when only one class is present (or there is no case).

    Raises:
        DataError: labels not 0/1, shapes differ, or a score is NaN or infinite.
    """
    t, s = _check_binary(y_true, scores)
    if t.all() or not t.any():
        return float("nan")
    return float(roc_auc_score(t, s))


def pr_points(curve: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PR points (recall, precision, threshold) in increasing recall, grid thresholds with a call only.

    Args:
        curve: a grid curve with at least one positive case.

    Returns:
        (recall, precision, thresholds) arrays.
    """
    if curve.n_pos == 0:
        raise DataError("a PR curve needs at least one positive case")
    keep = (curve.tp + curve.fp) > 0
    order = np.arange(curve.thresholds.size)[keep][::-1]
    return curve.recall[order], curve.precision[order], curve.thresholds[order]


def auprc(curve: Curve) -> float:
    """Average precision on the grid: ``sum_k (R_k - R_{k-1}) P_k``, ``R_0 = 0``.

    Args:
        curve: a grid curve.

    Returns:
        AUPRC in [0, 1].
    """
    recall, precision, _ = pr_points(curve)
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * precision))


def pr_auc_trapezoid(curve: Curve) -> float:
    """Trapezoidal area under the grid PR curve (starting at recall 0 with the first precision).

    Args:
        curve: a grid curve.

    Returns:
        The area.
    """
    recall, precision, _ = pr_points(curve)
    return float(
        np.trapezoid(np.concatenate([[precision[0]], precision]), np.concatenate([[0.0], recall]))
    )


def auprc_exact(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Exact average precision (scikit-learn); NaN without a positive case.

    Args:
        y_true: labels 0/1.
        scores: positive-class scores.

    Returns:
        The average precision.
    """
    t, s = _check_binary(y_true, scores)
    if not t.any():
        return float("nan")
    return float(average_precision_score(t, s))


def iso_f1_curve(f1: float, n_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Points (recall, precision) where F1 equals ``f1``: ``P = f1 R / (2 R - f1)``.

    Args:
        f1: the F1 level in (0, 1).
        n_points: number of points.

    Returns:
        (recall, precision) arrays with recall from f1/(2 - f1) to 1.
    """
    if not 0 < f1 < 1:
        raise ValueError(f"iso-F1 level must lie in (0, 1), got {f1}")
    recall = np.linspace(f1 / (2.0 - f1), 1.0, n_points)
    precision = f1 * recall / (2.0 * recall - f1)
    return recall, precision


def thresholds_table(
    y_true: np.ndarray, scores: np.ndarray, thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7)
) -> list[dict[str, float]]:
    """Sensitivity/specificity (and the other indices) at several thresholds (Yao et al. 2021, Table 3).

    Args:
        y_true: labels 0/1.
        scores: positive-class scores.
        thresholds: the thresholds (``EvaluateConfig.report_thresholds``; 0.5 included by default).

    Returns:
        One row per threshold as returned by :func:`indices_at_threshold`.
    """
    t, s = _check_binary(y_true, scores)
    return [indices_at_threshold(t, s, float(thr)) for thr in thresholds]


def multiclass_auroc(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], step: float = 0.005
) -> dict[str, dict[str, float]]:
    """One-vs-rest AUROC/AUPRC per class from class probabilities, and their macro averages.

    Args:
        y_true: true class indices 0..C-1, shape (n,).
        probs: class probabilities, shape (n, C).
        class_names: the C class names.
        step: threshold grid step.

    Returns:
        ``{class: {"auroc", "auroc_exact", "auprc", "auprc_exact"}, ..., "macro": {...}}``; a class
        absent from ``y_true`` (or the only class present) gets NaN and is skipped by the macro mean.
    """
    t = np.asarray(y_true).astype(int)
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape != (t.size, len(class_names)):
        raise DataError(f"probs must have shape (n, {len(class_names)}), got {p.shape}")
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(class_names):
        yk = (t == k).astype(int)
        if yk.all() or not yk.any():
            out[name] = dict.fromkeys(
                ("auroc", "auroc_exact", "auprc", "auprc_exact"), float("nan")
            )
            continue
        curve = grid_curve(yk, p[:, k], step)
        out[name] = {
            "auroc": auroc(curve),
            "auroc_exact": auroc_exact(yk, p[:, k]),
            "auprc": auprc(curve),
            "auprc_exact": auprc_exact(yk, p[:, k]),
        }
    macro = {}
    for key in ("auroc", "auroc_exact", "auprc", "auprc_exact"):
        vals = np.array([out[name][key] for name in class_names])
        macro[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    out["macro"] = macro
    return out


# ------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram bins (equal width on [0, 1]).

    Attributes:
        edges: bin edges, length n_bins + 1.
        confidence: mean score per bin (NaN for empty bins).
        frequency: observed fraction of positives per bin (NaN for empty bins).
        counts: cases per bin.
        ece: expected calibration error ``sum_b (n_b / n) |frequency_b - confidence_b|``.
    """

    edges: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray
    counts: np.ndarray
    ece: float


def reliability(y_true: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> Reliability:
    """Reliability bins and expected calibration error of positive-class scores.

    Bins are ``[0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1]`` (the last bin includes 1).

    Args:
        y_true: labels 0/1.
        scores: positive-class probabilities in [0, 1].
        n_bins: number of bins (``EvaluateConfig.calibration_bins``).

    Returns:
        The :class:`Reliability`.
    """
    t, s = _check_binary(y_true, scores)
    if s.size and (s.min() < 0 or s.max() > 1):
        raise DataError("scores: calibration needs probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.floor(s * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf = ratio(np.bincount(idx, weights=s, minlength=n_bins), counts)
    freq = ratio(np.bincount(idx, weights=t.astype(float), minlength=n_bins), counts)
    gaps = np.where(counts > 0, np.abs(np.nan_to_num(freq) - np.nan_to_num(conf)), 0.0)
    ece = float(np.sum(counts * gaps) / max(s.size, 1))
    return Reliability(edges=edges, confidence=conf, frequency=freq, counts=counts, ece=ece)


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error (see :func:`reliability`).

    Args:
        y_true: labels 0/1.
        scores: positive-class probabilities.
        n_bins: number of equal-width bins.

    Returns:
        ECE in [0, 1].
    """
    return reliability(y_true, scores, n_bins).ece


# ----------------------------------------------------------------------- operating threshold
THRESHOLD_RULES: tuple[str, ...] = ("specificity_at_sensitivity", "youden", "sensitivity_floor")
"""The data-driven rules of :func:`choose_threshold` (``EvaluateConfig.threshold_rule`` also allows "fixed")."""


def choose_threshold(
    y_true: np.ndarray,
    scores: np.ndarray,
    rule: str = "specificity_at_sensitivity",
    min_sensitivity: float = 0.9,
    step: float = 0.005,
) -> float:
    """Choose an operating threshold on validation data (never on the test set).

    Rules (a call is positive when ``score >= threshold``; thresholds on the grid 0, step, ..., 1):
        - ``"specificity_at_sensitivity"`` (the default): the highest specificity among the grid
          thresholds whose sensitivity is >= ``min_sensitivity``; the thresholds reaching it form one
          run of the grid, and the one in the middle of that run is taken (lower middle on an even
          count), so a cleanly separated validation set gets a threshold between the classes rather
          than on the edge of the lowest positive score. Threshold 0 calls everything positive, so a
          feasible threshold always exists.
        - ``"youden"``: the grid threshold maximising Youden's J = sensitivity + specificity - 1; ties go
          to the highest such threshold.
        - ``"sensitivity_floor"``: the highest grid threshold whose sensitivity is >= ``min_sensitivity``.

    Args:
        y_true: validation labels 0/1 (both classes present).
        scores: validation positive-class scores.
        rule: one of :data:`THRESHOLD_RULES` (``EvaluateConfig.threshold_rule``).
        min_sensitivity: the sensitivity floor of ``"specificity_at_sensitivity"`` and
            ``"sensitivity_floor"`` (``EvaluateConfig.min_sensitivity``).
        step: grid step.

    Returns:
        The threshold.

    Raises:
        DataError: a class is missing from the validation data.
        ValueError: unknown rule.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; expected one of {', '.join(THRESHOLD_RULES)}")
    curve = grid_curve(y_true, scores, step)
    if curve.n_pos == 0 or curve.n_neg == 0:
        raise DataError("choosing a threshold needs positive and negative validation cases")
    if rule == "youden":
        j = curve.tpr - curve.fpr
        best = np.flatnonzero(j >= j.max() - 1e-12)
        return float(curve.thresholds[best[-1]])
    feasible = np.flatnonzero(curve.tpr >= min_sensitivity - 1e-12)  # a prefix of the grid: 0 .. feasible[-1]
    if rule == "sensitivity_floor":
        return float(curve.thresholds[feasible[-1]])
    # specificity never falls as the threshold rises: the best feasible one is at feasible[-1], and
    # the thresholds tying with it are the run of grid points with the same false-positive count
    ties = feasible[curve.fp[feasible] == curve.fp[feasible[-1]]]
    return float(curve.thresholds[ties[(len(ties) - 1) // 2]])
