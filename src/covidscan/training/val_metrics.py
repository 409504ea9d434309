"""The validation metrics the loop reports every epoch and the Control Gate Block is driven by.

(The evaluation of a finished model -- bootstrap, curves, readers -- lives in covidscan.evaluation.)

Sensitivity: with a positive class (``positive_index``; class 1 for a 2-class model), the recall of
that class; otherwise the macro-average recall over the classes present in the labels. AUROC likewise:
the positive class's probability against the rest, or the macro one-vs-rest AUROC, each computed by
the project's one exact AUROC, :func:`covidscan.evaluation.curves.auroc_exact`. NaN when the labels do
not allow it (e.g. one class only).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def sensitivity(pred: torch.Tensor, target: torch.Tensor, num_classes: int, positive_index: int | None = None) -> float:
    """Recall of the positive class, or macro-average recall (see the module docstring).

    Args:
        pred: (N,) predicted class indices.
        target: (N,) true class indices.
        num_classes: C.
        positive_index: the positive class, or None for the macro average.
    """
    pred, target = pred.flatten().long(), target.flatten().long()
    classes = [positive_index] if positive_index is not None else list(range(num_classes))
    recalls = []
    for c in classes:
        positives = target == c
        if bool(positives.any()):
            recalls.append(float((pred[positives] == c).float().mean()))
    return sum(recalls) / len(recalls) if recalls else math.nan


def auroc(probs: torch.Tensor, target: torch.Tensor, positive_index: int | None = None) -> float:
    """AUROC of the positive class (one-vs-rest), or the macro one-vs-rest AUROC over present classes.

    Each one-vs-rest AUROC is :func:`covidscan.evaluation.curves.auroc_exact`.

    Args:
        probs: (N, C) class probabilities.
        target: (N,) true class indices.
        positive_index: the positive class, or None for the macro average.

    Returns:
        The AUROC; NaN when no class has both positive and negative cases, or when a probability is
        NaN or infinite (a diverged model).
    """
    from covidscan.evaluation.curves import auroc_exact  # here: the loop's imports stay free of matplotlib

    p, y = probs.detach().float().cpu().numpy(), target.flatten().long().cpu().numpy()
    if not np.isfinite(p).all():
        return math.nan
    classes = [positive_index] if positive_index is not None else list(range(p.shape[1]))
    scores = []
    for c in classes:
        is_c = y == c
        if 0 < is_c.sum() < len(y):
            scores.append(auroc_exact(is_c, p[:, c]))
    return sum(scores) / len(scores) if scores else math.nan
