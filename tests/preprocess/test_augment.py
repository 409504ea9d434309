"""Seeded training augmentation: shapes, dtypes, determinism, the flips themselves."""

from __future__ import annotations

import pytest
import torch

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.preprocess.augment import Augment2D, Augment3D


def _img2d(shape=(3, 16, 12)):
    return torch.arange(int(torch.tensor(shape).prod()), dtype=torch.int64).reshape(shape).remainder(251).to(torch.uint8)


def _vol3d(shape=(1, 6, 16, 12)):
    g = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=g).to(torch.float16)


@pytest.mark.parametrize(
    "cls, x, expected_dtype",
    [
        (Augment2D, _img2d((3, 16, 12)), torch.uint8),
        (Augment2D, _img2d((4, 3, 16, 12)), torch.uint8),
        (Augment2D, _img2d((300, 8, 8)).to(torch.float32), torch.float32),
        (Augment3D, _vol3d((1, 6, 16, 12)), torch.float32),
        (Augment3D, _vol3d((2, 1, 6, 16, 12)), torch.float32),
    ],
)
def test_shapes_kept(cls, x, expected_dtype):
    aug = cls(PreprocessConfig(), seed=1)
    for _ in range(3):
        y = aug(x)
        assert y.shape == x.shape and y.dtype == expected_dtype
        assert type(y) is torch.Tensor  # plain tensor, not MONAI's MetaTensor


@pytest.mark.parametrize("cls, make", [(Augment2D, _img2d), (Augment3D, _vol3d)])
def test_same_seed_same_sequence(cls, make):
    x = make()
    a, b = cls(PreprocessConfig(), seed=7), cls(PreprocessConfig(), seed=7)
    outs_a = [a(x) for _ in range(6)]
    outs_b = [b(x) for _ in range(6)]
    for ya, yb in zip(outs_a, outs_b, strict=True):
        assert torch.equal(ya, yb)
    # the stream is random: over several draws not every output is the same
    assert any(not torch.equal(outs_a[0], y) for y in outs_a[1:])


@pytest.mark.parametrize("cls, make", [(Augment2D, _img2d), (Augment3D, _vol3d)])
def test_per_call_seed_is_independent_of_history(cls, make):
    x = make()
    a, b = cls(PreprocessConfig(), seed=0), cls(PreprocessConfig(), seed=123)
    for _ in range(3):
        a(x)
    assert torch.equal(a(x, seed=5), b(x, seed=5))


def test_2d_flip_is_horizontal():
    cfg = PreprocessConfig(aug_flip_prob=1.0)
    x = _img2d()
    assert torch.equal(Augment2D(cfg)(x), torch.flip(x, dims=[2]))


def test_3d_flips_are_horizontal_and_vertical():
    cfg = PreprocessConfig(aug_flip_prob=1.0, aug_rotate_prob=0.0, aug_scale_prob=0.0)
    x = _vol3d()
    assert torch.equal(Augment3D(cfg)(x), torch.flip(x.float(), dims=[2, 3]))


def test_3d_identity_when_all_probabilities_are_zero():
    cfg = PreprocessConfig(aug_flip_prob=0.0, aug_rotate_prob=0.0, aug_scale_prob=0.0)
    x = _vol3d()
    assert torch.equal(Augment3D(cfg)(x), x.float())


def test_3d_rotation_stays_in_the_axial_plane():
    """A rotation about the z axis moves pixels within each slice, never between slices."""
    cfg = PreprocessConfig(aug_flip_prob=0.0, aug_rotate_prob=1.0, aug_rotate_deg=15.0, aug_scale_prob=0.0)
    x = torch.zeros(1, 4, 24, 24)
    x[0, 1, 8:16, 8:16] = 1.0  # a block in slice 1 only
    y = Augment3D(cfg, seed=3)(x)
    assert y[0, [0, 2, 3]].abs().max() == 0
    assert not torch.allclose(y[0, 1], x[0, 1])
    assert y[0, 1].sum().item() == pytest.approx(x[0, 1].sum().item(), rel=0.1)


def test_3d_scaling_changes_the_image_but_not_the_shape():
    cfg = PreprocessConfig(aug_flip_prob=0.0, aug_rotate_prob=0.0, aug_scale_prob=1.0, aug_scale_range=(1.1, 1.1))
    x = torch.zeros(1, 8, 24, 24)
    x[0, 2:6, 8:16, 8:16] = 1.0
    y = Augment3D(cfg)(x)
    assert y.shape == x.shape and y.sum() > x.sum()  # zoom in: the block grows


def test_wrong_rank_and_type():
    with pytest.raises(DataError, match="dims"):
        Augment2D(PreprocessConfig())(torch.zeros(2, 2))
    with pytest.raises(DataError, match="torch.Tensor"):
        Augment3D(PreprocessConfig())(_vol3d().numpy())
