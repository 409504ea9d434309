"""Losses: the distillation loss against a value computed by hand, class weights, weighted CE."""

from __future__ import annotations

import math

import pytest
import torch

from covidscan.training.losses import class_weights_from_labels, distillation_loss, weighted_cross_entropy

LN3 = math.log(3.0)

# Two samples, two classes, T = 2, alpha = 0.5.
# Student logits z_s: sample 1 = [0, 0]        -> softmax(z/T) = [1/2, 1/2],  softmax(z) = [1/2, 1/2]
#                     sample 2 = [0, 2 ln 3]   -> softmax(z/T) = [1/4, 3/4],  softmax(z) = [1/10, 9/10]
# Teacher probabilities p_t: sample 1 = [1/4, 3/4], sample 2 = [1/2, 1/2]. Labels y = [1, 0].
#
# KL(p_t || q_s), sample 1 = 1/4 ln((1/4)/(1/2)) + 3/4 ln((3/4)/(1/2)) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308121
#                 sample 2 = 1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = 1/2 ln 2   + 1/2 ln(2/3) = 0.1438410
#   batch mean = 0.1373265
# CE(z_s, y) (T = 1): sample 1 = -ln(1/2) = 0.6931472, sample 2 = -ln(1/10) = 2.3025851; mean = 1.4978661
# L = 0.5 * 2^2 * 0.1373265 + 0.5 * 1.4978661 = 0.2746531 + 0.7489331 = 1.0235862
STUDENT = torch.tensor([[0.0, 0.0], [0.0, 2 * LN3]])
TEACHER = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
LABELS = torch.tensor([1, 0])
KL = ((0.25 * math.log(0.5) + 0.75 * math.log(1.5)) + (0.5 * math.log(2.0) + 0.5 * math.log(2 / 3))) / 2
CE = (-math.log(0.5) - math.log(0.1)) / 2


def test_distillation_loss_matches_hand_computation():
    loss = distillation_loss(STUDENT, TEACHER, LABELS, alpha=0.5, temperature=2.0)
    assert loss.item() == pytest.approx(0.5 * 4 * KL + 0.5 * CE, abs=1e-6)
    assert loss.item() == pytest.approx(1.0235862, abs=1e-6)


def test_distillation_loss_with_class_weights():
    # weighted CE = (w_1 * 0.6931472 + w_0 * 2.3025851) / (w_1 + w_0) with w = [2, 1] -> 1.7661058
    loss = distillation_loss(STUDENT, TEACHER, LABELS, alpha=0.5, temperature=2.0, weight=torch.tensor([2.0, 1.0]))
    assert loss.item() == pytest.approx(0.5 * 4 * KL + 0.5 * (1 * -math.log(0.5) + 2 * -math.log(0.1)) / 3, abs=1e-6)
    assert loss.item() == pytest.approx(0.2746531 + 0.5 * 1.7661058, abs=1e-6)


@pytest.mark.parametrize("alpha, expected", [(0.0, CE), (1.0, 4 * KL)])
def test_distillation_loss_extremes(alpha, expected):
    assert distillation_loss(STUDENT, TEACHER, LABELS, alpha=alpha, temperature=2.0).item() == pytest.approx(expected, abs=1e-6)


def test_soft_term_is_zero_when_student_matches_teacher():
    z = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    teacher = torch.softmax(z / 4.0, dim=1)
    loss = distillation_loss(z, teacher, LABELS, alpha=1.0, temperature=4.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_inverse_frequency_class_weights():
    # 6 samples: four of class 0, two of class 1, none of class 2 -> N / (C * n_c) = 6/(3*4), 6/(3*2), 0
    w = class_weights_from_labels([0, 0, 0, 0, 1, 1], num_classes=3)
    assert torch.allclose(w, torch.tensor([0.5, 1.0, 0.0]))
    assert class_weights_from_labels([0, 1], num_classes=2, scheme="none") is None
    with pytest.raises(ValueError, match="labels must lie"):
        class_weights_from_labels([0, 3], num_classes=2)


def test_weighted_cross_entropy_is_weighted_mean():
    loss = weighted_cross_entropy(STUDENT, LABELS, torch.tensor([2.0, 1.0]))
    assert loss.item() == pytest.approx((-math.log(0.5) * 1 + -math.log(0.1) * 2) / 3, abs=1e-6)
