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
            scores.append(binary_auroc(torch.from_numpy(p[:, c]), torch.from_numpy(is_c)))
    return sum(scores) / len(scores) if scores else math.nan


def binary_auroc(score: torch.Tensor, is_positive: torch.Tensor) -> float:
    """AUROC as the Mann-Whitney U statistic (ties get average ranks); equals sklearn's roc_auc_score.

    Args:
        score: (N,) scores, higher = more positive.
        is_positive: (N,) booleans; both classes must be present.
    """
    score = score.detach().double().flatten()
    is_positive = is_positive.flatten().bool()
    n_pos = int(is_positive.sum())
    n_neg = score.numel() - n_pos
    order = score.argsort()
    _, inverse, counts = torch.unique_consecutive(score[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each tied group
    ranks = torch.empty_like(score)
    ranks[order] = average_rank[inverse]
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
