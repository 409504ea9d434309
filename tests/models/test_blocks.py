"""ResBlock-A/B, the bottleneck variant, the residual stage, the Control Gate Block and the regressor."""

from __future__ import annotations

import math

import pytest
import torch

from covidscan.models.blocks import BottleneckResBlockA, ControlGateBlock, RegressorBlock, ResBlockA, ResBlockB, ResidualStage

# (kwargs, input shape, expected output shape)
RESBLOCK_CASES = [
    ({"in_channels": 4, "out_channels": 8}, (2, 4, 16, 16), (2, 8, 8, 8)),
    ({"in_channels": 4, "out_channels": 8, "stride": 1}, (2, 4, 16, 16), (2, 8, 16, 16)),
    ({"in_channels": 4, "out_channels": 6, "padding": 0}, (2, 4, 16, 16), (2, 6, 7, 7)),
    ({"in_channels": 3, "out_channels": 5}, (1, 3, 15, 9), (1, 5, 8, 5)),
    ({"in_channels": 2, "out_channels": 4, "spatial_dims": 3}, (2, 2, 8, 8, 8), (2, 4, 4, 4, 4)),
    ({"in_channels": 2, "out_channels": 4, "spatial_dims": 3, "stride": 1}, (1, 2, 5, 6, 7), (1, 4, 5, 6, 7)),
]


@pytest.mark.parametrize("kwargs,in_shape,out_shape", RESBLOCK_CASES)
@pytest.mark.parametrize("cls", [ResBlockA, BottleneckResBlockA])
def test_resblock_a_shapes_and_outputs(cls, kwargs, in_shape, out_shape):
    block = cls(**kwargs)
    x = torch.randn(in_shape)
    out1, out2 = block(x)
    assert out1.shape == out2.shape == out_shape
    assert block.output_size(in_shape[2:]) == out_shape[2:]
    assert torch.equal(out2, torch.relu(out1))
    assert (out1 < 0).any(), "output 1 is the sum without ReLU"


@pytest.mark.parametrize("kwargs,in_shape,out_shape", RESBLOCK_CASES)
def test_resblock_b_single_activated_output(kwargs, in_shape, out_shape):
    torch.manual_seed(1)
    b = ResBlockB(**kwargs).eval()
    a = ResBlockA(**kwargs).eval()
    a.load_state_dict(b.state_dict())
    x = torch.randn(in_shape)
    y = b(x)
    assert isinstance(y, torch.Tensor) and y.shape == out_shape
    assert torch.equal(y, a(x)[1])
    assert (y >= 0).all()


def test_first_block_gets_x_twice_and_branches_take_their_own_input():
    block = ResBlockA(3, 6).eval()
    x, z = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert torch.equal(block(x)[0], block(x, x)[0])
    # upper branch reads input 1, bottom branch input 2
    expected = block.upper(x) + block.bottom(z)
    assert torch.allclose(block(x, z)[0], expected)
    assert not torch.allclose(block(x, z)[0], block(z, x)[0])


def test_bottleneck_has_three_convs_in_bottom_branch():
    plain = ResBlockA(16, 32)
    bottle = BottleneckResBlockA(16, 32, ratio=4)
    convs = lambda m: [c for c in m.bottom if isinstance(c, torch.nn.Conv2d)]  # noqa: E731
    assert [c.kernel_size for c in convs(plain)] == [(3, 3), (3, 3)]
    assert [c.kernel_size for c in convs(bottle)] == [(1, 1), (3, 3), (1, 1)]
    assert convs(bottle)[1].out_channels == 8


@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        ({"in_channels": 4, "widths_a": [8, 16], "width_b": 16, "num_b": 1}, (2, 4, 32, 32), (2, 16, 4, 4)),
        ({"in_channels": 4, "widths_a": [8, 16], "width_b": 12, "num_b": 2, "stride_b": 1}, (2, 4, 32, 32), (2, 12, 8, 8)),
        ({"in_channels": 4, "widths_a": [8], "width_b": 8, "num_b": 0}, (1, 4, 16, 16), (1, 8, 8, 8)),
        ({"in_channels": 2, "widths_a": [4, 4], "width_b": 4, "spatial_dims": 3}, (1, 2, 16, 16, 16), (1, 4, 2, 2, 2)),
        ({"in_channels": 4, "widths_a": [8, 8, 8], "width_b": 8, "bottleneck": True}, (1, 4, 32, 32), (1, 8, 2, 2)),
    ],
)
def test_residual_stage_shapes(kwargs, in_shape, out_shape):
    stage = ResidualStage(**kwargs)
    y = stage(torch.randn(in_shape))
    assert y.shape == out_shape
    assert stage.output_size(in_shape[2:]) == out_shape[2:]
    assert stage.out_channels == out_shape[1]


# ------------------------------------------------------------------------------- control gate
def test_gate_opens_after_exactly_ths_count_passes_and_latches():
    cgb = ControlGateBlock(8, 2, ths_sens=0.9, ths_count=3)
    assert not cgb.is_open and cgb.count == 0
    assert cgb.update(0.95) is False
    assert cgb.update(0.9) is False  # >= threshold passes
    assert cgb.count == 2 and not cgb.is_open
    assert cgb.update(1.0) is True
    assert cgb.is_open
    assert cgb.update(0.0) is True, "the gate latches once open"


def test_gate_counter_resets_on_a_failing_pass():
    cgb = ControlGateBlock(8, 2, ths_sens=0.9, ths_count=3)
    for s in (0.95, 0.95, 0.89):
        cgb.update(s)
    assert cgb.count == 0 and not cgb.is_open
    cgb.update(0.99)
    cgb.update(0.99)
    assert not cgb.is_open
    cgb.update(float("nan"))  # no positives in validation: a failing pass
    assert cgb.count == 0
    for _ in range(2):
        assert cgb.update(0.99) is False
    assert cgb.update(0.99) is True


def test_gate_multiplies_in_training_and_is_open_in_eval():
    cgb = ControlGateBlock(4, 3, ths_count=1)
    f = torch.randn(2, 4, 3, 3)
    cgb.train()
    assert torch.equal(cgb.apply_gate(f), torch.zeros_like(f))
    cgb.eval()
    assert torch.equal(cgb.apply_gate(f), f)
    cgb.train()
    cgb.update(1.0)
    assert torch.equal(cgb.apply_gate(f), f)


def test_gate_aux_head_and_state_survive_state_dict(tmp_path):
    cgb = ControlGateBlock(4, 3, ths_count=3)
    assert cgb(torch.randn(5, 4, 6, 6)).shape == (5, 3)
    cgb.update(0.95)
    cgb.update(0.95)
    path = tmp_path / "cgb.pt"
    torch.save(cgb.state_dict(), path)
    fresh = ControlGateBlock(4, 3, ths_count=3)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.count == 2 and not fresh.is_open
    assert fresh.update(0.95) is True
    torch.save(fresh.state_dict(), path)
    again = ControlGateBlock(4, 3, ths_count=3)
    again.load_state_dict(torch.load(path, weights_only=True))
    assert again.is_open


@pytest.mark.parametrize("bad", [{"ths_sens": 1.5}, {"ths_count": 0}])
def test_gate_rejects_bad_thresholds(bad):
    with pytest.raises(ValueError):
        ControlGateBlock(4, 2, **bad)


# ---------------------------------------------------------------------------------- regressor
@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        ({"in_channels": 16, "conv_channels": 16, "hidden1": 8, "hidden2": 4}, (3, 16, 8, 8), (3, 5)),
        ({"in_channels": 8, "conv_channels": 4, "hidden1": 6, "hidden2": 3, "out_features": 2}, (2, 8, 1, 1), (2, 2)),
        ({"in_channels": 4, "conv_channels": 4, "hidden1": 4, "hidden2": 2, "spatial_dims": 3}, (2, 4, 3, 3, 3), (2, 5)),
    ],
)
def test_regressor_block_shapes(kwargs, in_shape, out_shape):
    block = RegressorBlock(**kwargs)
    assert block(torch.randn(in_shape)).shape == out_shape
    skip_conv = block.skip[0]
    assert skip_conv.out_channels == kwargs["hidden2"] == block.main[-1].out_features
    assert math.prod(skip_conv.kernel_size) == 1
