"""Validation metrics: AUROC equals scikit-learn's (positive class, macro, degenerate), sensitivity positive/macro."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from covidscan.training.val_metrics import auroc, sensitivity


def test_auroc_positive_class_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    p1 = torch.randint(0, 5, (60,), generator=g).float() / 4  # many ties
    y = (torch.rand(60, generator=g) < 0.4).long()
    probs = torch.stack([1 - p1, p1], dim=1)
    assert auroc(probs, y, 1) == pytest.approx(roc_auc_score(y.numpy(), p1.numpy()), abs=1e-12)


def test_auroc_multiclass_macro_and_degenerate():
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    y = torch.tensor([0, 1, 2, 0])
    assert auroc(probs, y) == pytest.approx(roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr", average="macro"))
    assert math.isnan(auroc(probs, torch.zeros(4, dtype=torch.long), 1))
    assert math.isnan(auroc(torch.full((4, 3), math.nan), y))  # a diverged model: NaN, not an error


def test_sensitivity_positive_class_and_macro():
    pred, y = torch.tensor([1, 0, 1, 2, 2]), torch.tensor([1, 1, 0, 2, 2])
    assert sensitivity(pred, y, 3, positive_index=1) == pytest.approx(0.5)
    assert sensitivity(pred, y, 3) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
