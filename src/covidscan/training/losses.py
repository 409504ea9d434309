"""Losses: weighted cross-entropy, class weights, and the knowledge-distillation loss (SPEC sections 3-4).

Knowledge distillation (Hinton et al. 2015). SPEC writes ``KL(softmax(z_s/T) || p_teachers)``; its
notation is loose about the direction. We implement the standard Hinton form, the KL divergence *from
the teachers to the student*::

    L = alpha * T^2 * KL(p_t || q_s) + (1 - alpha) * CE_w(z_s, y)
    KL(p_t || q_s) = mean over samples of sum_c p_t[c] * (log p_t[c] - log q_s[c])
    q_s = softmax(z_s / T),   p_t = the fused, temperature-softened teacher probabilities

computed as ``F.kl_div(log_softmax(z_s / T), p_t, reduction="batchmean")``. The ``T^2`` factor keeps
the soft term's gradient scale independent of T.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F


def class_weights_from_labels(
    labels: Sequence[int] | torch.Tensor, num_classes: int, scheme: Literal["inverse_frequency", "none"] = "inverse_frequency"
) -> torch.Tensor | None:
    """Class weights for weighted cross-entropy, from the *training* labels.

    ``inverse_frequency``: ``w_c = N / (C * n_c)`` (balanced classes give 1.0 each); a class absent
    from the labels gets weight 0 (it cannot occur as a target anyway). ``none`` returns None.

    Args:
        labels: integer class labels of the training samples.
        num_classes: C, the number of model outputs.
        scheme: "inverse_frequency" or "none".
    """
    if scheme == "none":
        return None
    if scheme != "inverse_frequency":
        raise ValueError(f"class weight scheme must be 'inverse_frequency' or 'none', got {scheme!r}")
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if labels.numel() == 0:
        raise ValueError("cannot compute class weights from an empty label list")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got range [{int(labels.min())}, {int(labels.max())}]")
    counts = torch.bincount(labels, minlength=num_classes).double()
    weights = torch.where(counts > 0, labels.numel() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with optional class weights (PyTorch's weighted mean: divided by the sum of the targets' weights).

    Args:
        logits: (B, C) raw scores, any float dtype (computed in float32).
        target: (B,) integer labels.
        weight: (C,) class weights or None.
    """
    return F.cross_entropy(logits.float(), target, weight=None if weight is None else weight.to(logits.device))


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * T^2 * KL(p_t || softmax(z_s/T)) + (1 - alpha) * CE_w(z_s, y)`` (see the module docstring).

    Args:
        student_logits: (B, C) student logits z_s.
        teacher_probs: (B, C) fused teacher probabilities p_t, already softened with the same T
            (rows sum to 1; see :mod:`covidscan.training.distill`).
        target: (B,) hard labels y.
        alpha: weight of the soft (teacher) term, 0..1.
        temperature: T > 0.
        weight: class weights of the hard-label cross-entropy, or None.
    """
    z = student_logits.float()
    soft = F.kl_div(F.log_softmax(z / temperature, dim=1), teacher_probs.float(), reduction="batchmean")
    hard = weighted_cross_entropy(z, target, weight)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard
