"""CNNCF (student), its teachers, the CT front, the gate inside the network, and refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from covidscan.config import ModelsConfig, TeacherArch
from covidscan.errors import ModelConfigError
from covidscan.models.blocks import BottleneckResBlockA, ResBlockB, xavier_init_
from covidscan.models.cnncf import CNNCF, teacher_config

SMALL = dict(stem_width=4, widths_stage1=[8, 8], width_stage1_b=8, widths_stage2=[16, 16], width_stage2_b=16)

# (kwargs, input shape, expected logits shape)
CNNCF_CASES = [
    ({**SMALL, "num_classes": 2, "input_size": 64}, (2, 3, 64, 64), (2, 2)),
    ({**SMALL, "num_classes": 3, "input_size": 128}, (1, 3, 128, 128), (1, 3)),
    ({**SMALL, "num_classes": 4, "input_size": (64, 96), "stride_b": 1}, (2, 3, 64, 96), (2, 4)),
    ({**SMALL, "num_classes": 2, "input_size": 32, "in_channels": 1, "stride_b": 1}, (2, 1, 32, 32), (2, 2)),
    ({**SMALL, "num_classes": 2, "input_size": 32, "in_channels": 12, "stride_b": 1}, (2, 12, 32, 32), (2, 2)),
    ({**SMALL, "num_classes": 2, "input_size": 128, "Q": 2, "stride_b": 1}, (2, 3, 128, 128), (2, 2)),
    ({**SMALL, "num_classes": 2, "input_size": 16, "spatial_dims": 3, "stride_b": 1}, (2, 3, 16, 16, 16), (2, 2)),
]


@pytest.mark.parametrize("kwargs,in_shape,out_shape", CNNCF_CASES)
def test_cnncf_shapes(kwargs, in_shape, out_shape):
    model = CNNCF(**kwargs)
    x = torch.randn(in_shape)
    model.open_gates()
    logits, aux = model.forward_with_aux(x)
    assert logits.shape == out_shape and len(aux) == kwargs.get("Q", 1) and all(a.shape == out_shape for a in aux)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model(x).shape == out_shape
    assert tuple(feats["stage2"].shape[1:]) == model.feature_shapes["stage2"]
    assert len(feats["stage1"]) == len(feats["aux"]) == kwargs.get("Q", 1)


def test_paper_shapes_at_512():
    """SPEC: a 512x512 input gives 64x64x256 after stage I and 8x8x512 after stage II (paper widths)."""
    model = CNNCF(num_classes=2).eval()
    assert model.feature_shapes == {"stem": (64, 512, 512), "stage1": (256, 64, 64), "stage2": (512, 8, 8)}
    with torch.no_grad():
        feats = model.forward_features(torch.rand(1, 3, 512, 512))
    assert feats["stem"].shape == (1, 64, 512, 512)
    assert feats["stage1"][0].shape == (1, 256, 64, 64)
    assert feats["stage2"].shape == (1, 512, 8, 8)
    assert feats["logits"].shape == (1, 2)
    assert feats["aux"][0].shape == (1, 2)


def test_ct_front_groups_contiguous_slices():
    model = CNNCF(**SMALL, num_classes=2, in_channels=300, input_size=32, stride_b=1).eval()
    front = model.front
    assert isinstance(front, torch.nn.Conv2d)
    assert (front.in_channels, front.out_channels, front.groups, front.kernel_size) == (300, 3, 3, (1, 1))
    assert front.weight.requires_grad
    x = torch.randn(1, 300, 8, 8)
    y0 = front(x)
    x2 = x.clone()
    x2[:, 100:200] += 5.0  # only the second group of 100 slices changes
    y1 = front(x2)
    assert torch.equal(y0[:, 0], y1[:, 0]) and torch.equal(y0[:, 2], y1[:, 2])
    assert not torch.allclose(y0[:, 1], y1[:, 1])
    assert isinstance(CNNCF(**SMALL, input_size=64).front, torch.nn.Identity)


def test_xavier_initialisation():
    model = xavier_init_(CNNCF(**SMALL, input_size=64))  # the training loop's initialisation
    conv = model.stem[0]
    fan_in, fan_out = conv.in_channels * 9, conv.out_channels * 9
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.5 * bound
    lin = model.head[-1]
    assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    bn = model.stem[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


# ------------------------------------------------------------------------------- teachers
@pytest.mark.parametrize("name,mln,bottleneck", [("TS1", (2, 1, 3), False), ("TS2", (2, 2, 2), False), ("TS3", (3, 1, 2), True), ("TS4", (3, 2, 2), True)])
def test_teacher_architectures(name, mln, bottleneck):
    cfg = teacher_config(name, ModelsConfig())
    assert (cfg.M, cfg.L, cfg.N, cfg.bottleneck) == (*mln, bottleneck)
    assert len(cfg.widths_stage1) == cfg.M and len(cfg.widths_stage2) == cfg.N
    with torch.device("meta"):
        model = CNNCF.from_config(cfg, num_classes=2, in_channels=3, input_size=512)
    stage1 = model.stages1[0]
    assert len(stage1.blocks_a) == mln[0] and len(stage1.blocks_b) == mln[1]
    assert len(model.stage2.blocks_a) == mln[2] and len(model.stage2.blocks_b) == 1
    assert all(isinstance(b, BottleneckResBlockA) == bottleneck for b in [*stage1.blocks_a, *model.stage2.blocks_a])
    assert all(isinstance(b, ResBlockB) for b in stage1.blocks_b)


@pytest.mark.parametrize("name", ["student", "TS1", "TS2", "TS3", "TS4"])
def test_all_teachers_and_student_build_at_64_with_narrow_widths(name, small_cfg):
    cfg = small_cfg()
    c = cfg.cnncf if name == "student" else teacher_config(name, cfg)
    model = CNNCF.from_config(c, num_classes=3, in_channels=3, input_size=64)
    model.open_gates()
    logits, (aux,) = model.forward_with_aux(torch.randn(2, 3, 64, 64))
    assert logits.shape == aux.shape == (2, 3)


def test_ts4_at_64_needs_the_smaller_resblock_b_stride(small_cfg):
    cfg = small_cfg(stride_b=2)
    with pytest.raises(ModelConfigError, match="stride_b"):
        CNNCF.from_config(teacher_config("TS4", cfg), num_classes=2, in_channels=3, input_size=64)


def test_unknown_teacher_is_refused():
    with pytest.raises(ModelConfigError, match="TS9"):
        teacher_config("TS9", ModelsConfig())
    custom = ModelsConfig(teacher_archs={"T5": TeacherArch(M=1, L=0, N=1)}, teachers=["T5"])
    assert teacher_config("T5", custom).widths_stage1 == [256]


# ---------------------------------------------------------------------------------- gate
def _closed_gate_step(model: CNNCF, x: torch.Tensor, y: torch.Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    logits, aux = model.forward_with_aux(x)
    loss = F.cross_entropy(logits, y) + model.lambda_aux * F.cross_entropy(aux[model.active_gate_index()], y)
    loss.backward()


def test_closed_gate_zeroes_stage2_and_only_stage1_and_aux_learn():
    model = CNNCF(**SMALL, num_classes=2, input_size=32, stride_b=1, ths_count=2)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    assert not model.gate_open
    model.train()
    feats = model.forward_features(x)
    assert feats["stage2"].shape[1:] == model.feature_shapes["stage2"]
    assert torch.count_nonzero(feats["stage2"]) == 0, "a closed gate lets nothing through"
    _closed_gate_step(model, x, y)
    for name, p in [*model.stage2.named_parameters(), *model.head.named_parameters()]:
        assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    for name, p in [*model.stem.named_parameters(), *model.stages1.named_parameters(), *model.gates.named_parameters()]:
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    # in eval mode the gate is open: stage II contributes
    model.eval()
    with torch.no_grad():
        assert torch.count_nonzero(model.forward_features(x)["stage2"]) > 0


def test_open_gate_trains_stage2():
    model = CNNCF(**SMALL, num_classes=2, input_size=32, stride_b=1, ths_count=2)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    assert model.update_gate(0.95) is False
    assert model.update_gate(0.95) is True and model.gate.is_open
    _closed_gate_step(model, x, y)
    for name, p in model.stage2.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_q2_gates_open_in_order():
    model = CNNCF(**SMALL, num_classes=2, input_size=128, Q=2, stride_b=1, ths_count=1)
    x = torch.randn(2, 3, 128, 128)
    assert model.active_gate_index() == 0
    model.eval()  # deterministic BN: the two forward passes must agree
    with torch.no_grad():
        logits, aux = model.forward_with_aux(x)
        assert len(aux) == 2 and all(torch.equal(a, b) for a, b in zip(aux, model.forward_features(x)["aux"]))
    model.train()
    assert model.update_gate(1.0) is False  # first gate opens, second still closed
    assert model.gates[0].is_open and not model.gates[1].is_open
    assert model.active_gate_index() == 1
    assert model.update_gate(1.0) is True
    assert model.gate_open


# ------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({**SMALL, "input_size": 32}, "stage II ResBlock-B 1 \\(stride_b=2\\).*1x1"),
        ({**SMALL, "input_size": 8, "stride_b": 1}, "stage II ResBlock-A"),
        ({**SMALL, "input_size": 512, "Q": 3}, "stage II"),
        ({**SMALL, "input_size": 64, "M": 3}, "widths_stage1 has 2 entries.*M=3"),
        ({**SMALL, "input_size": 64, "widths_stage2": [16, 16, 16]}, "widths_stage2 has 3 entries.*N=2"),
        ({**SMALL, "input_size": 64, "widths_stage1": [8, 0]}, "widths_stage1 must be positive"),
        ({**SMALL, "input_size": 64, "in_channels": 10}, "in_channels=10"),
        ({**SMALL, "input_size": 64, "padding": 2}, "padding"),
        ({**SMALL, "input_size": (64, 64, 64)}, "input_size"),
        ({**SMALL, "input_size": 64, "N": 0, "widths_stage2": []}, "N must be >= 1"),
    ],
)
def test_refused_configurations(kwargs, match):
    with pytest.raises(ModelConfigError, match=match):
        CNNCF(**kwargs)


def test_refusal_is_exactly_at_the_limit():
    # stride 2 everywhere, 6 halvings (ceil): 33 -> 17 -> 9 -> 5 -> 3 -> 2 -> 1; 32 would halve a 1x1 map
    assert CNNCF(**SMALL, input_size=33).feature_shapes["stage2"] == (16, 1, 1)
    with pytest.raises(ModelConfigError):
        CNNCF(**SMALL, input_size=32)


def test_stage1_method_is_the_stage1_output():
    model = CNNCF(**SMALL, input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f1 = model.stage1(x)
        assert torch.equal(f1, model.forward_features(x)["stage1"][-1])
    assert tuple(f1.shape[1:]) == model.feature_shapes["stage1"]


def test_closed_gate_main_logits_are_constant_in_training():
    model = CNNCF(**SMALL, num_classes=3, input_size=32, stride_b=1)
    model.train()
    a, b = model(torch.randn(2, 3, 32, 32)), model(torch.randn(2, 3, 32, 32))
    assert torch.equal(a, b) and not a.requires_grad
    assert torch.equal(a[0], model.head[-1].bias.detach())


def test_models_config_teachers_must_be_defined():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="TS9"):
        ModelsConfig(teachers=["TS1", "TS9"])
