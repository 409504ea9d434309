"""Validation metrics: AUROC equals scikit-learn's, sensitivity positive/macro."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from covidscan.training.val_metrics import auroc, binary_auroc, sensitivity


def test_binary_auroc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 5, (60,), generator=g).float()  # many ties
    y = torch.rand(60, generator=g) < 0.4
    assert binary_auroc(score, y) == pytest.approx(roc_auc_score(y.numpy(), score.numpy()), abs=1e-12)


def test_auroc_multiclass_macro_and_degenerate():
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    y = torch.tensor([0, 1, 2, 0])
    assert auroc(probs, y) == pytest.approx(roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr", average="macro"))
    assert math.isnan(auroc(probs, torch.zeros(4, dtype=torch.long), 1))


def test_sensitivity_positive_class_and_macro():
    pred, y = torch.tensor([1, 0, 1, 2, 2]), torch.tensor([1, 1, 0, 2, 2])
    assert sensitivity(pred, y, 3, positive_index=1) == pytest.approx(0.5)
    assert sensitivity(pred, y, 3) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
