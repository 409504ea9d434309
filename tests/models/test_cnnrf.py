"""CNNRF: stem + stage II + regressor block -> 5 clinical indicators."""

from __future__ import annotations

import pytest
import torch

from covidscan.config import ModelsConfig
from covidscan.errors import ModelConfigError
from covidscan.models.blocks import RegressorBlock
from covidscan.models.cnnrf import CLINICAL_INDICATORS, CNNRF

SMALL = dict(stem_width=4, widths=(16, 16), width_b=16)


@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        ({**SMALL}, (3, 3, 64, 64), (3, 5)),
        ({**SMALL, "input_size": 32, "stride_b": 1}, (2, 3, 32, 32), (2, 5)),
        ({**SMALL, "input_size": 16, "stride_b": 1, "in_channels": 1, "num_outputs": 2}, (2, 1, 16, 16), (2, 2)),
        ({**SMALL, "input_size": 8, "spatial_dims": 3, "stride_b": 1}, (2, 3, 8, 8, 8), (2, 5)),
    ],
)
def test_cnnrf_shapes(kwargs, in_shape, out_shape):
    model = CNNRF(**kwargs)
    assert model(torch.randn(in_shape)).shape == out_shape


def test_cnnrf_paper_layout_from_config():
    with torch.device("meta"):
        model = CNNRF.from_config(ModelsConfig(), in_channels=3, input_size=64)
    assert model.feature_shapes["stage2"] == (512, 8, 8)  # 64x64 crop -> M/8 x N/8 x 512
    assert isinstance(model.regressor, RegressorBlock)
    assert model.regressor.skip[0].out_channels == model.regressor.main[-1].out_features == 128
    assert model.regressor.out.out_features == 5
    assert model.class_labels == CLINICAL_INDICATORS
    assert model.card.task == "regression"


def test_cnnrf_refuses_tiny_crops():
    with pytest.raises(ModelConfigError, match="CNNRF: stage II"):
        CNNRF(**SMALL, input_size=4)
