"""Fused teacher probabilities (mean, AUROC-weighted, best fold) on fixed logits; the ensemble module."""

from __future__ import annotations

import math

import pytest
import torch

from covidscan.config import DistillConfig
from covidscan.errors import ConfigError
from covidscan.training.distill import TeacherEnsemble, fuse_teacher_probs, teacher_probs
from tests.training.standins import ConstantLogits, TinyCNN

LN3 = math.log(3.0)
T = 2.0
# Teacher A, two folds: logits [0, 0] -> softmax(z/2) = [1/2, 1/2]; [0, 2 ln 3] -> [1/4, 3/4]
#   mean of folds = [3/8, 5/8]; CV AUROCs 0.8, 0.9 (mean 0.85, best fold = fold 2)
# Teacher B, one fold: [2 ln 3, 0] -> [3/4, 1/4]; CV AUROC 0.6
A_FOLDS = [[0.0, 0.0], [0.0, 2 * LN3]]
B_FOLDS = [[2 * LN3, 0.0]]
AUROCS = {"A": [0.8, 0.9], "B": [0.6]}


def _ensemble(**cfg) -> TeacherEnsemble:
    teachers = {"A": [ConstantLogits(z) for z in A_FOLDS], "B": [ConstantLogits(z) for z in B_FOLDS]}
    return TeacherEnsemble(teachers, DistillConfig(temperature=T, **cfg), AUROCS)


@pytest.mark.parametrize(
    "cfg, expected_p0",
    [
        ({"fusion": "mean"}, (3 / 8 + 3 / 4) / 2),  # 0.5625
        ({"fusion": "auroc_weighted"}, (0.85 * 3 / 8 + 0.6 * 3 / 4) / (0.85 + 0.6)),  # 0.530172
        ({"fusion": "mean", "teacher_mode": "best_fold"}, (1 / 4 + 3 / 4) / 2),  # 0.5
        ({"fusion": "auroc_weighted", "teacher_mode": "best_fold"}, (0.9 * 1 / 4 + 0.6 * 3 / 4) / 1.5),  # 0.45
    ],
)
def test_fused_teacher_probabilities(cfg, expected_p0):
    probs = _ensemble(**cfg)(torch.zeros(3, 1, 4, 4))
    assert probs.shape == (3, 2)
    assert torch.allclose(probs[:, 0], torch.full((3,), expected_p0), atol=1e-6)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-6)


def test_functional_fusion_matches_hand_values():
    a = teacher_probs([torch.tensor([z]) for z in A_FOLDS], T)
    assert torch.allclose(a, torch.tensor([[3 / 8, 5 / 8]]), atol=1e-6)
    b = teacher_probs([torch.tensor([z]) for z in B_FOLDS], T)
    fused = fuse_teacher_probs([a, b], "auroc_weighted", [0.85, 0.6])
    assert fused[0, 0].item() == pytest.approx(0.76875 / 1.45, abs=1e-6)
    with pytest.raises(ConfigError, match="one CV AUROC per teacher"):
        fuse_teacher_probs([a, b], "auroc_weighted", [0.85])


def test_ensemble_stays_in_eval_mode_without_gradients():
    ens = TeacherEnsemble({"A": [TinyCNN(), TinyCNN()]}, DistillConfig())
    ens.train()
    assert not ens.training and all(not m.training for m in ens.modules())
    out = ens(torch.randn(4, 1, 8, 8))
    assert not out.requires_grad
    assert all(not p.requires_grad for p in ens.parameters())


def test_weighting_needs_aurocs():
    with pytest.raises(ConfigError, match="need CV AUROCs"):
        TeacherEnsemble({"A": [ConstantLogits([0.0, 0.0])]}, DistillConfig(fusion="auroc_weighted"))


def test_from_checkpoints_loads_fold_weights(tmp_path):
    folds = [TinyCNN(), TinyCNN()]
    entries = []
    for i, model in enumerate(folds):
        path = tmp_path / f"A_fold{i}.pt"
        torch.save(model.state_dict(), path)
        entries.append(("A", path, 0.7 + 0.1 * i))
    ens = TeacherEnsemble.from_checkpoints(entries, lambda name: TinyCNN(), DistillConfig(teacher_mode="best_fold"))
    x = torch.randn(2, 1, 8, 8)
    folds[1].eval()
    assert torch.allclose(ens(x), torch.softmax(folds[1](x) / 4.0, dim=1), atol=1e-6)
