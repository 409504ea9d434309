"""The validation metrics the loop reports every epoch and the Control Gate Block is driven by.

(The evaluation of a finished model -- bootstrap, curves, readers -- lives in covidscan.evaluation.)

Sensitivity: with a positive class (``positive_index``; class 1 for a 2-class model), the recall of
that class; otherwise the macro-average recall over the classes present in the labels. AUROC likewise:
the positive class's probability against the rest, or the macro one-vs-rest AUROC. NaN when the
labels do not allow it (e.g. one class only).
"""

from __future__ import annotations

import math

import torch
from sklearn.metrics import roc_auc_score


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

    Args:
        probs: (N, C) class probabilities.
        target: (N,) true class indices.
        positive_index: the positive class, or None for the macro average.
    """
    p, y = probs.detach().float().cpu().numpy(), target.flatten().long().cpu().numpy()
    classes = [positive_index] if positive_index is not None else list(range(p.shape[1]))
    scores = []
    for c in classes:
        is_c = y == c
        if 0 < is_c.sum() < len(y):
            scores.append(float(roc_auc_score(is_c, p[:, c])))
    return sum(scores) / len(scores) if scores else math.nan
