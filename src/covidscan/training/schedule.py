"""Learning-rate schedule: linear warm-up, then step decay (SPEC section 4).

The factor multiplies the optimiser's base learning rate and is evaluated once per *epoch* (the loop
calls ``scheduler.step()`` at the end of every epoch):

- warm-up, epochs ``0 .. W-1``: ``(epoch + 1) / (W + 1)`` -- rises linearly towards 1 and never starts
  at 0 (an epoch at lr 0 would be wasted);
- afterwards: ``gamma ** (epoch // step_size)`` -- the usual StepLR, counted from epoch 0, so with the
  paper's values (W=2, step 10, gamma 0.1) epochs 2-9 run at 0.01, 10-19 at 0.001, 20-29 at 1e-4.
"""

from __future__ import annotations

import torch

from covidscan.config import OptimConfig


class WarmupStepDecay:
    """Picklable learning-rate factor (a callable object, so LambdaLR saves its state in checkpoints).

    Args:
        warmup_epochs: number of linear warm-up epochs (0: none).
        step_size: decay every this many epochs.
        gamma: multiplicative decay.
    """

    def __init__(self, warmup_epochs: int, step_size: int, gamma: float) -> None:
        self.warmup_epochs = int(warmup_epochs)
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        return self.gamma ** (epoch // self.step_size)


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """The learning-rate factor for an epoch (0-based) under ``cfg``."""
    return WarmupStepDecay(cfg.warmup_epochs, cfg.step_size, cfg.gamma)(epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :class:`WarmupStepDecay`; step it once per epoch.

    Args:
        optimizer: the optimiser whose base learning rate is ``cfg.lr``.
        cfg: warm-up epochs, step size and gamma.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupStepDecay(cfg.warmup_epochs, cfg.step_size, cfg.gamma))
