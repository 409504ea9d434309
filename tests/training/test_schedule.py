"""Warm-up + step-decay schedule values at given epochs."""

from __future__ import annotations

import pytest
import torch

from covidscan.config import OptimConfig
from covidscan.training.schedule import build_scheduler, lr_factor

CFG = OptimConfig(lr=0.01, warmup_epochs=2, step_size=10, gamma=0.1)
# warm-up epochs 0, 1 run at 1/3 and 2/3 of the base rate; then gamma ** (epoch // 10)
EXPECTED = {0: 1 / 3, 1: 2 / 3, 2: 1.0, 9: 1.0, 10: 0.1, 19: 0.1, 20: 0.01}


@pytest.mark.parametrize("epoch, factor", sorted(EXPECTED.items()))
def test_factor_at_epoch(epoch, factor):
    assert lr_factor(epoch, CFG) == pytest.approx(factor)


def test_scheduler_sets_the_optimiser_lr_per_epoch():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=CFG.lr)
    sched = build_scheduler(opt, CFG)
    seen = {}
    for epoch in range(21):
        seen[epoch] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    for epoch, factor in EXPECTED.items():
        assert seen[epoch] == pytest.approx(0.01 * factor)


def test_no_warmup():
    cfg = OptimConfig(warmup_epochs=0, step_size=50, gamma=0.1)
    assert [lr_factor(e, cfg) for e in (0, 49, 50, 100)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
