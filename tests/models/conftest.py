"""Shared small configurations for the model tests (narrow widths keep the run fast on one core)."""

from __future__ import annotations

import pytest
import torch

from covidscan.config import CNNCFConfig, CSACNetConfig, ModelsConfig


def _small_models_config(**cnncf_overrides) -> ModelsConfig:
    """The demo-like configuration: paper widths divided by 8 (or 16), ResBlock-B stride 1."""
    cnncf = dict(stem_width=8, widths_stage1=[16, 32], width_stage1_b=32, widths_stage2=[64, 64], width_stage2_b=64, stride_b=1)
    cnncf.update(cnncf_overrides)
    return ModelsConfig(
        cnncf=CNNCFConfig(**cnncf),
        cnnrf_width=32,
        csacnet=CSACNetConfig(base_width=2, fc_hidden=[8, 4]),
    )


@pytest.fixture
def small_cfg():
    """Factory: ``small_cfg(**cnncf_overrides) -> ModelsConfig`` (demo-like narrow widths)."""
    return _small_models_config


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
