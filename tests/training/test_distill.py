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


# ----------------------------------------------------------- teachers whose gate never opened
def _cnncf(opened: bool):
    from covidscan.models.cnncf import CNNCF

    model = CNNCF(stem_width=4, widths_stage1=[8, 8], width_stage1_b=8, widths_stage2=[8, 8], width_stage2_b=8,
                  stride_a=1, stride_b=2, num_classes=2, in_channels=1, input_size=16)  # fmt: skip
    if opened:
        model.open_gates()
    return model


def test_teachers_whose_gate_never_opened_are_left_out_of_the_fusion():
    from covidscan.training.distill import gate_status, usable_teachers

    open_a, closed_a, closed_b = _cnncf(True), _cnncf(False), _cnncf(False)
    assert (gate_status(open_a), gate_status(closed_a), gate_status(TinyCNN())) == (True, False, None)
    recorded = _cnncf(True)
    recorded.card.gate_opened = False  # the training record wins over the buffers (e.g. keep="best" before opening)
    assert gate_status(recorded) is False
    teachers = {"A": [open_a, closed_a, recorded], "B": [closed_b], "C": [TinyCNN()]}
    kept, aurocs, left_out = usable_teachers(teachers, {"A": [0.9, 0.8, 0.7], "B": [0.6], "C": [0.5]})
    assert kept == {"A": [open_a], "C": [teachers["C"][0]]} and aurocs == {"A": [0.9], "C": [0.5]}
    assert left_out == [("A", 1), ("A", 2), ("B", 0)]
    assert usable_teachers({"B": [closed_b]}) == ({}, None, [("B", 0)])
    # the ensemble never fuses a closed-gate teacher silently
    with pytest.raises(ConfigError, match="never opened"):
        TeacherEnsemble({"A": [open_a, closed_a]}, DistillConfig())
    assert TeacherEnsemble(kept, DistillConfig())(torch.rand(2, 1, 16, 16)).shape == (2, 2)
