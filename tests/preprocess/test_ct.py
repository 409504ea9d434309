"""CT: lung window, z resampling, dimension normalisation and 3D volumes."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.preprocess.ct import (
    crop_or_pad,
    ct_stack,
    ct_volume,
    crop_or_pad_start,
    resample_slices,
    resample_thickness,
    slice_grey,
    stack_groups,
    thickness_slices,
    volume_slice_index,
    window_bounds,
    window_uint8,
    window_unit,
)


def test_paper_window_bounds():
    assert window_bounds(-600, 2000) == (-1600, 400)


def test_window_exact_values():
    hu = np.array([-3000, -1600, -600, 400, 2000], np.int16)
    np.testing.assert_allclose(window_unit(hu), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert window_uint8(hu).tolist() == [0, 0, 128, 255, 255]  # -600 -> 127.5 -> rounds to 128
    assert window_uint8(hu).dtype == np.uint8
    # linear inside the window
    np.testing.assert_allclose(window_unit(np.array([-1100.0, 100.0])), [0.25, 0.85], atol=1e-6)


def test_window_other_parameters():
    assert window_uint8(np.array([-160, 40, 240]), center=40, width=400).tolist() == [0, 128, 255]


def test_resample_keeps_end_slices_and_linear_midpoints():
    vol = np.stack([np.full((2, 2), v, np.float32) for v in (0.0, 10.0, 40.0)])
    out = resample_slices(vol, 5)
    assert out.shape == (5, 2, 2)
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 5.0, 10.0, 25.0, 40.0])
    np.testing.assert_array_equal(out[0], vol[0])
    np.testing.assert_array_equal(out[-1], vol[-1])


def test_resample_down_and_integer_input():
    vol = np.arange(7, dtype=np.int16)[:, None, None] * np.ones((1, 3, 3), np.int16)
    out = resample_slices(vol, 4)  # positions 0, 2, 4, 6
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 1, 1], [0, 2, 4, 6])


def test_resample_single_slice_is_repeated():
    vol = np.full((1, 2, 2), 3.0, np.float32)
    out = resample_slices(vol, 6)
    assert out.shape == (6, 2, 2) and (out == 3.0).all()


def test_resample_thickness_to_5mm():
    vol = np.arange(21, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)  # 1 mm, 20 mm extent
    out, spacing = resample_thickness(vol, 1.0, 5.0)
    assert out.shape[0] == 5 and spacing == pytest.approx(5.0)
    np.testing.assert_allclose(out[:, 0, 0], [0, 5, 10, 15, 20])
    out, spacing = resample_thickness(vol, 1.0, 3.0)  # 20/3 -> 7 intervals, spacing 20/7
    assert out.shape[0] == 8 and spacing == pytest.approx(20 / 7)


@pytest.mark.parametrize("spacing", [float("nan"), 0.0, -1.0])
def test_resample_thickness_needs_spacing(spacing):
    with pytest.raises(DataError, match="spacing"):
        resample_thickness(np.zeros((4, 2, 2)), spacing, 5.0)


@pytest.mark.parametrize(
    ("n_slices", "input_shape", "expected_shape"),
    [(300, (30, 8, 6), (300, 8, 6)), (12, (30, 8, 6), (12, 8, 6)), (1, (5, 4, 4), (1, 4, 4)), (9, (1, 4, 4), (9, 4, 4))],
)
def test_resample_slices_shapes(n_slices, input_shape, expected_shape):
    out = resample_slices(np.zeros(input_shape, np.int16), n_slices)
    assert out.shape == expected_shape and out.dtype == np.float32


def test_resample_slices_is_linear_in_z():
    n, m = 10, 40
    ramp = (np.arange(n, dtype=np.float32) * 10.0)[:, None, None] * np.ones((n, 2, 3), np.float32)
    np.testing.assert_allclose(resample_slices(ramp, m)[:, 0, 0], np.linspace(0, n - 1, m) * 10.0, atol=1e-4)
    np.testing.assert_array_equal(resample_slices(ramp, n), ramp)
    np.testing.assert_array_equal(resample_slices(ramp, 1), ramp[[4]])  # the middle slice (z - 1) // 2
    with pytest.raises(ValueError):
        resample_slices(ramp, 0)


@pytest.mark.parametrize(
    ("spacing", "target", "n_source", "expected_n", "expected_spacing"),
    [
        (8.0, 5.0, 30, 47, 29 * 8.0 / 46),
        (1.0, 5.0, 301, 61, 5.0),
        (1.25, 5.0, 101, 26, 5.0),
        (5.0, 5.0, 7, 7, 5.0),
        (0.5, 5.0, 3, 1, 5.0),
        (2.0, 5.0, 1, 1, 5.0),
    ],
)
def test_resample_thickness_shapes(spacing, target, n_source, expected_n, expected_spacing):
    out, achieved = resample_thickness(np.zeros((n_source, 4, 4), np.int16), spacing, target)
    assert out.shape == (expected_n, 4, 4) == (thickness_slices(n_source, spacing, target), 4, 4)
    assert achieved == pytest.approx(expected_spacing)


def test_crop_or_pad():
    vol = np.arange(10, dtype=np.float32)[:, None, None]
    np.testing.assert_array_equal(crop_or_pad(vol, 4, -1)[:, 0, 0], [3, 4, 5, 6])
    padded = crop_or_pad(vol[:3], 6, -1)[:, 0, 0]
    np.testing.assert_array_equal(padded, [-1, 0, 1, 2, -1, -1])


@pytest.mark.parametrize(
    "kwargs, in_shape, expected",
    [
        ({"ct_slices": 9, "ct_size": 32}, (12, 40, 40), (9, 32, 32)),
        ({"ct_slices": 30, "ct_size": 16}, (7, 36, 36), (30, 16, 16)),
        ({"ct_slices": 3, "ct_size": 64}, (5, 40, 30), (3, 64, 64)),
    ],
)
def test_ct_stack_shapes(kwargs, in_shape, expected, make_ct):
    vol = make_ct(in_shape[0], in_shape[1])[:, :, : in_shape[2]]
    out = ct_stack(vol, PreprocessConfig(**kwargs))
    assert out.shape == expected and out.dtype == np.uint8


def test_ct_stack_values_follow_the_window(make_ct):
    vol = make_ct(12, 40)
    cfg = PreprocessConfig(ct_slices=12, ct_size=40)  # same size: no resampling at all
    out = ct_stack(vol, cfg)
    np.testing.assert_array_equal(out, window_uint8(vol))
    groups = stack_groups(out)
    assert [g.shape[0] for g in groups] == [4, 4, 4]
    np.testing.assert_array_equal(np.concatenate(groups), out)


def test_stack_groups_paper_size():
    groups = stack_groups(np.zeros((300, 2, 2), np.uint8))
    assert [g.shape[0] for g in groups] == [100, 100, 100]
    with pytest.raises(DataError):
        stack_groups(np.zeros((10, 2, 2), np.uint8))


@pytest.mark.parametrize(
    "kwargs, in_shape, spacing, expected",
    [
        ({"volume_slices": 8, "volume_size": 32}, (12, 40), 2.5, (8, 32, 32)),  # 27.5 mm -> 7 slices -> padded
        ({"volume_slices": 4, "volume_size": 16}, (12, 40), 5.0, (4, 16, 16)),  # 12 slices -> cropped
        ({"volume_slices": 6, "volume_size": 48, "volume_thickness_mm": 1.0}, (7, 36), 5.0, (6, 48, 48)),
    ],
)
def test_ct_volume_shapes_dtype_range(kwargs, in_shape, spacing, expected, make_ct):
    out = ct_volume(make_ct(*in_shape), spacing, PreprocessConfig(**kwargs))
    assert out.shape == expected and out.dtype == np.float16
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_ct_volume_pads_with_air(make_ct):
    cfg = PreprocessConfig(volume_slices=10, volume_size=20)
    out = ct_volume(make_ct(3, 20), 5.0, cfg)  # 3 slices at 5 mm stay 3: 3 padded before, 4 after
    air = np.float16(window_unit(np.float32(-1000)))
    assert (out[:3] == air).all() and (out[-4:] == air).all()
    assert not (out[3:6] == air).all()


def test_crop_or_pad_start():
    assert [crop_or_pad_start(n, 4) for n in (10, 5, 4, 3, 1)] == [3, 0, 0, 0, -1]
    assert crop_or_pad_start(3, 6) == -1 and crop_or_pad_start(2, 7) == -2


@pytest.mark.parametrize(
    ("n_source", "spacing", "volume_slices"),
    [
        (12, 2.5, 8),  # 27.5 mm -> 7 slices, padded
        (30, 8.0, 24),  # thick slices: upsampled to 5 mm, cropped
        (41, 1.25, 8),  # thin slices: downsampled, cropped
        (64, 1.0, 8),
        (20, 10.0, 24),
        (7, 5.0, 8),  # no resampling, padded
    ],
)
def test_volume_slice_index_is_where_a_marked_slice_lands(n_source, spacing, volume_slices):
    """A bright marker on one source slice, through the real ct_volume: its output centroid is the mapped index."""
    cfg = PreprocessConfig(volume_slices=volume_slices, volume_size=16)
    air = float(np.float16(window_unit(np.float32(-1000))))
    checked = 0
    for s in range(n_source):
        hu = np.full((n_source, 16, 16), -1000, np.int16)
        hu[s] = 400
        profile = ct_volume(hu, spacing, cfg).astype(float).mean((1, 2)) - air
        mapped = float(volume_slice_index(s, n_source, spacing, cfg))
        if profile.sum() < 1e-3:  # fell between two output slices of a downsampling, or cropped away
            assert thickness_slices(n_source, spacing, 5.0) < n_source or not -0.5 < mapped < volume_slices - 0.5
            continue
        if profile[0] > 1e-3 or profile[-1] > 1e-3:  # may be cut by the crop: no reliable centroid
            continue
        landed = float((profile * np.arange(volume_slices)).sum() / profile.sum())
        assert abs(mapped - landed) <= 0.5, f"source slice {s}: mapped to {mapped:.2f}, the marker landed at {landed:.2f}"
        checked += 1
    assert checked >= 3
    # vectorised: the same numbers for an array of (fractional) indices
    idx = np.array([0.0, 2.5, n_source - 1.0])
    np.testing.assert_allclose(volume_slice_index(idx, n_source, spacing, cfg), [float(volume_slice_index(i, n_source, spacing, cfg)) for i in idx])


def test_volume_slice_index_needs_spacing_and_slices():
    with pytest.raises(DataError, match="spacing"):
        volume_slice_index(3, 10, float("nan"), PreprocessConfig())
    with pytest.raises(DataError, match="0 slices"):
        volume_slice_index(0, 0, 5.0, PreprocessConfig())
    one = PreprocessConfig(volume_slices=5)
    assert float(volume_slice_index(0, 1, 5.0, one)) == 2.0  # one slice, padded 2 before


def test_ct_volume_needs_spacing(make_ct):
    with pytest.raises(DataError, match="record c9"):
        ct_volume(make_ct(4, 16), float("nan"), PreprocessConfig(), what="record c9")


def test_ct_rejects_2d_input():
    with pytest.raises(DataError, match="z, y, x"):
        ct_stack(np.zeros((4, 4)), PreprocessConfig())


def test_one_hu_slice_is_rendered_with_the_lung_window_as_a_published_slice():
    cfg = PreprocessConfig()
    hu = np.array([[-2000, -1600, -600], [400, 1000, -1000]], dtype=np.int16)
    grey = slice_grey(hu, cfg)
    assert grey.dtype == np.float32 and grey.shape == (2, 3)
    np.testing.assert_array_equal(grey, [[0, 0, 128], [255, 255, 76]])  # -1000 HU: (600 / 2000) * 255 = 76.5 -> 76
    shifted = slice_grey(hu, cfg.model_copy(update={"ct_window_center": -500.0, "ct_window_width": 1000.0}))
    assert shifted[0, 2] == 102  # -600 HU in [-1000, 0]: the configured window, not a fixed one
    with pytest.raises(DataError, match="one CT slice"):
        slice_grey(np.zeros((2, 3, 3), np.int16), cfg)
