"""Classification indices at a threshold (SPEC.md section 5), binary and multi-class one-vs-rest.

Every index is computed from the four confusion counts, so the same formulas serve a single test set
(scalars) and a whole bootstrap at once (arrays of counts with a leading resample axis).

Empty-denominator rule: an index whose denominator is zero is *undefined* and returned as ``NaN``
(never silently 0 or 1, unlike scikit-learn's ``zero_division`` default of 0 with a warning):

- sensitivity = TP / (TP + FN): NaN when the set has no positive case;
- specificity = TN / (TN + FP): NaN when the set has no negative case;
- precision = TP / (TP + FP): NaN when nothing is called positive;
- F1 = 2 TP / (2 TP + FP + FN): NaN only when there is no positive case *and* no positive call
  (so F1 is 0, not NaN, when there are positives but none is found);
- kappa = (p_o - p_e) / (1 - p_e): NaN when p_e = 1 (both raters give one and the same class to every
  case);
- accuracy = (TP + TN) / n: NaN when n = 0.

A call is positive when ``score >= threshold`` (scores equal to the threshold are positive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from covidscan.errors import DataError

BINARY_INDICES: tuple[str, ...] = (
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "kappa",
    "accuracy",
)


@dataclass(frozen=True)
class ConfusionCounts:
    """The four counts of a binary confusion matrix (scalars, or arrays of one shape).

    Attributes:
        tp: true positives.
        fp: false positives.
        tn: true negatives.
        fn: false negatives.
    """

    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray

    @property
    def n(self) -> np.ndarray:
        """Number of cases."""
        return self.tp + self.fp + self.tn + self.fn


def _as_binary(values: np.ndarray | Sequence[int], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise DataError(f"{name}: expected binary values 0/1, got {np.unique(arr)[:5].tolist()}")
    return arr.astype(bool)


def binarize(scores: np.ndarray | Sequence[float], threshold: float = 0.5) -> np.ndarray:
    """Turn scores (probabilities of the positive class) into calls: positive when score >= threshold.

    Args:
        scores: scores of shape (..., n).
        threshold: the operating threshold.

    Returns:
        Boolean array of the same shape.
    """
    return np.asarray(scores, dtype=float) >= threshold


def confusion_counts(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int]
) -> ConfusionCounts:
    """Count TP, FP, TN, FN along the last axis.

    Args:
        y_true: true labels (0/1 or bool), shape (..., n).
        y_pred: binary calls (0/1 or bool), same shape.

    Returns:
        The counts; scalars for 1D input, arrays of shape (...) for batched input.

    Raises:
        DataError: shapes differ or values are not binary.
    """
    t = _as_binary(y_true, "y_true")
    p = _as_binary(y_pred, "y_pred")
    if t.shape != p.shape:
        raise DataError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    tp = np.sum(t & p, axis=-1)
    fp = np.sum(~t & p, axis=-1)
    tn = np.sum(~t & ~p, axis=-1)
    fn = np.sum(t & ~p, axis=-1)
    return ConfusionCounts(tp=tp, fp=fp, tn=tn, fn=fn)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with NaN where the denominator is zero (the module's rule).

    Args:
        numerator: array or scalar.
        denominator: array or scalar of a broadcastable shape.

    Returns:
        Float array (0-d for scalars).
    """
    num = np.asarray(numerator, dtype=float)
    den = np.asarray(denominator, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)
    return out


def indices_from_counts(counts: ConfusionCounts) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, precision, F1, Cohen's kappa and accuracy from confusion counts.

    Args:
        counts: scalars or arrays (e.g. one entry per bootstrap resample).

    Returns:
        Mapping index name -> float array of the counts' shape (NaN per the module's rule).
    """
    tp, fp, tn, fn = (
        np.asarray(c, dtype=float) for c in (counts.tp, counts.fp, counts.tn, counts.fn)
    )
    n = tp + fp + tn + fn
    p_o = ratio(tp + tn, n)
    # chance agreement: P(both positive) + P(both negative) under independent marginals
    p_e = ratio((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), n * n)
    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "kappa": ratio(p_o - p_e, 1.0 - p_e),
        "accuracy": p_o,
    }


def binary_indices(
    y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int]
) -> dict[str, float]:
    """All binary indices of hard calls plus the confusion counts.

    Args:
        y_true: true labels 0/1, shape (n,).
        y_pred: calls 0/1, shape (n,).

    Returns:
        ``{"sensitivity", "specificity", "precision", "f1", "kappa", "accuracy", "tp", "fp", "tn",
        "fn", "n"}`` as Python floats/ints.
    """
    counts = confusion_counts(y_true, y_pred)
    out: dict[str, float] = {k: float(v) for k, v in indices_from_counts(counts).items()}
    out.update(
        tp=int(counts.tp), fp=int(counts.fp), tn=int(counts.tn), fn=int(counts.fn), n=int(counts.n)
    )
    return out


def indices_at_threshold(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    threshold: float = 0.5,
) -> dict[str, float]:
    """Binary indices of scores cut at ``threshold`` (positive when score >= threshold).

    Args:
        y_true: true labels 0/1, shape (n,).
        scores: positive-class scores in [0, 1], shape (n,).
        threshold: the operating threshold (``EvaluateConfig.threshold``).

    Returns:
        As :func:`binary_indices`, plus ``"threshold"``.
    """
    out = binary_indices(y_true, binarize(scores, threshold))
    out["threshold"] = float(threshold)
    return out


def multiclass_indices(
    y_true: np.ndarray | Sequence[int],
    y_pred: np.ndarray | Sequence[int],
    class_names: Sequence[str],
) -> dict[str, dict[str, float]]:
    """One-vs-rest indices per class and their macro averages (experiment R).

    For class k, "positive" means "class k" and the binary indices above are computed on
    ``(y_true == k, y_pred == k)``. The macro average of an index is the unweighted mean over the
    classes where it is defined (NaN classes are skipped; NaN if none is defined). Kappa is reported
    per class (one-vs-rest) and, under ``"overall"``, as the multi-class Cohen's kappa of the labels
    (equal to scikit-learn's ``cohen_kappa_score``) together with the overall accuracy.

    Args:
        y_true: true class indices 0..C-1, shape (n,).
        y_pred: predicted class indices 0..C-1 (e.g. ``probs.argmax(1)``), shape (n,).
        class_names: the C class names, in index order.

    Returns:
        ``{class_name: indices, ..., "macro": indices, "overall": {"kappa", "accuracy", "n"}}``.

    Raises:
        DataError: labels outside 0..C-1 or shapes differ.
    """
    t = np.asarray(y_true).astype(int)
    p = np.asarray(y_pred).astype(int)
    n_classes = len(class_names)
    if t.shape != p.shape or t.ndim != 1:
        raise DataError(f"y_true and y_pred must be 1D of one length, got {t.shape} and {p.shape}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise DataError(f"{name}: class indices must lie in 0..{n_classes - 1}")
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(class_names):
        out[name] = binary_indices(t == k, p == k)
    macro: dict[str, float] = {}
    for index in BINARY_INDICES:
        values = np.array([out[name][index] for name in class_names], dtype=float)
        macro[index] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    out["macro"] = macro
    confusion = np.zeros((n_classes, n_classes), dtype=float)
    np.add.at(confusion, (t, p), 1)
    n = confusion.sum()
    p_o = float(ratio(np.trace(confusion), n))
    p_e = float(ratio(confusion.sum(1) @ confusion.sum(0), n * n))
    out["overall"] = {
        "kappa": float(ratio(p_o - p_e, 1.0 - p_e)),
        "accuracy": p_o,
        "n": int(n),
    }
    return out
