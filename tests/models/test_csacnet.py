"""3D CSAC-Net: shapes, the paper's layer counts per part, refusals; the MONAI 3D ResNet baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from covidscan.config import CSACNetConfig
from covidscan.errors import ModelConfigError
from covidscan.models.csacnet import CSACNet3D, ResNet3D

TINY = dict(base_width=2, subnet_width=2, fc_hidden=(8, 4))


def _counts(module: nn.Module) -> dict[str, int]:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv3d)]
    return {
        "conv": sum(1 for c in convs if max(c.dilation) == 1),
        "atrous": sum(1 for c in convs if max(c.dilation) > 1),
        "maxpool": sum(1 for m in module.modules() if isinstance(m, nn.MaxPool3d)),
        "fc": sum(1 for m in module.modules() if isinstance(m, nn.Linear)),
    }


def test_default_configuration_reproduces_the_paper_counts():
    """Yao et al. 2021: 39 3D convs, 10 atrous 3D convs, 3 max-pools in the baseline, 5 in the cross-layer
    subnets, 3 fully-connected layers, three cross-layers."""
    cfg = CSACNetConfig()
    with torch.device("meta"):
        model = CSACNet3D.from_config(cfg, num_classes=2, in_channels=1, input_size=(64, 512, 512))
    baseline, subnets, head = _counts(model.baseline), _counts(model.subnets), _counts(model.classifier)
    total = _counts(model)
    assert len(model.subnets) == cfg.cross_layers == 3
    assert total == {"conv": 39, "atrous": 10, "maxpool": 8, "fc": 3}
    assert baseline == {"conv": 36, "atrous": 0, "maxpool": 3, "fc": 0}
    assert subnets == {"conv": 3, "atrous": 10, "maxpool": 5, "fc": 0}
    assert head == {"conv": 0, "atrous": 0, "maxpool": 0, "fc": 3}
    # each subnet pools down to the baseline's output resolution
    assert [s.num_pools for s in model.subnets] == [2, 2, 1]
    assert model.baseline.stem[0].in_channels == 1
    assert dict(model.named_modules())[model.target_layer] is model.baseline.pools[3]


def test_counts_scale_with_cross_layers():
    with torch.device("meta"):
        model = CSACNet3D(**TINY, cross_layers=1, input_size=(8, 32, 32))
    assert _counts(model.subnets) == {"conv": 1, "atrous": 4, "maxpool": 2, "fc": 0}


@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        ({**TINY, "input_size": (8, 32, 32)}, (2, 1, 8, 32, 32), (2, 2)),
        ({**TINY, "input_size": (12, 24, 40)}, (2, 1, 12, 24, 40), (2, 2)),
        ({**TINY, "input_size": 16, "stem_stride": 2, "num_classes": 3}, (2, 1, 16, 16, 16), (2, 3)),
        ({**TINY, "input_size": (8, 16, 16), "blocks": (1, 1, 1, 1, 1), "cross_layers": 4, "pooled_modules": (2, 4)}, (2, 1, 8, 16, 16), (2, 2)),
        ({**TINY, "input_size": (16, 32, 32), "pooled_modules": (1, 2, 3)}, (2, 1, 16, 32, 32), (2, 2)),
    ],
)
def test_csacnet_shapes(kwargs, in_shape, out_shape):
    model = CSACNet3D(**kwargs)
    x = torch.randn(in_shape)
    assert model(x).shape == out_shape
    merged = model.forward_features(x)
    assert merged.shape[1] == model.baseline.out_channels + len(model.subnets) * 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({**TINY, "input_size": (4, 32, 32)}, "max-pool before module 4.*below 1x1x1"),
        ({**TINY, "input_size": (8, 32, 32), "cross_layers": 4}, "cross_layers"),
        ({**TINY, "input_size": (8, 32, 32), "pooled_modules": (5,)}, "pooled_modules"),
        ({**TINY, "input_size": (8, 32, 32), "stem_stride": (1, 2)}, "stem_stride"),
        ({**TINY, "input_size": (8, 32, 32), "dilations": ()}, "dilations"),
        ({**TINY, "input_size": (32, 32)}, "input_size"),
    ],
)
def test_csacnet_refusals(kwargs, match):
    with pytest.raises(ModelConfigError, match=match):
        CSACNet3D(**kwargs)


@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        ({"base_width": 2, "input_size": (8, 32, 32)}, (2, 1, 8, 32, 32), (2, 2)),
        ({"base_width": 2, "input_size": (16, 16, 16), "num_classes": 3, "layers": (1, 1, 1, 1)}, (2, 1, 16, 16, 16), (2, 3)),
    ],
)
def test_resnet3d_baseline_shapes(kwargs, in_shape, out_shape):
    model = ResNet3D(**kwargs)
    assert model(torch.randn(in_shape)).shape == out_shape
    assert model.net.conv1.in_channels == 1
