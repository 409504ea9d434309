"""The 2D path: normalisation, resize, pseudo-colour, crops."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.config import PreprocessConfig
from covidscan.errors import ConfigError, DataError
from covidscan.preprocess.xray import (
    colormap_names,
    crop_box,
    grey_2d,
    lesion_crop,
    normalise_to_uint8,
    preprocess_2d,
    pseudo_colour,
    resize_2d,
)


def test_minmax_maps_extremes_to_0_and_255():
    img = np.array([[-3.0, 0.0], [1.0, 5.0]], np.float32)
    out = normalise_to_uint8(img)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, round(3 / 8 * 255)], [round(4 / 8 * 255), 255]]


def test_percentile_clips_a_hot_pixel_that_minmax_follows(make_xray):
    img = make_xray(64, 64)
    img[0, 0] = 1e6  # a burned-in marker
    minmax = normalise_to_uint8(img, "minmax")
    robust = normalise_to_uint8(img, "percentile", (1.0, 99.0))
    assert minmax[0, 0] == 255 and np.percentile(minmax, 50) < 2  # everything else crushed to black
    assert robust[0, 0] == 255 and np.percentile(robust, 50) > 20


def test_constant_image_gives_zeros():
    assert not normalise_to_uint8(np.full((5, 5), 7.0)).any()


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 4)), np.zeros((0, 3)), np.array([[np.nan, 1.0]])])
def test_bad_inputs_raise_data_error(bad):
    with pytest.raises(DataError):
        normalise_to_uint8(bad, what="record z")


def test_bright_stays_bright_no_inversion_here(make_xray):
    """MONOCHROME1 is inverted at ingest; preprocessing must not invert again."""
    img = make_xray(64, 64)
    grey = normalise_to_uint8(img)
    dense = img > np.percentile(img, 95)
    assert grey[dense].mean() > grey[~dense].mean() + 50


@pytest.mark.parametrize(
    "size, in_shape, interpolation",
    [(32, (96, 80), "auto"), (128, (50, 60), "auto"), ((20, 30), (40, 40), "area"), (16, (16, 16), "cubic"), (40, (90, 70), "linear")],
)
def test_resize_shapes_and_dtype(size, in_shape, interpolation, make_xray):
    img = normalise_to_uint8(make_xray(*in_shape))
    out = resize_2d(img, size, interpolation)
    expected = (size, size) if isinstance(size, int) else size
    assert out.shape == expected and out.dtype == np.uint8
    out_f = resize_2d(img.astype(np.float32), size, interpolation)
    assert out_f.dtype == np.float32 and out_f.shape == expected


def test_gray3_replicates_grey(make_xray):
    grey = normalise_to_uint8(make_xray(40, 30))
    out = pseudo_colour(grey, "gray3")
    assert out.shape == (3, 40, 30) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[c], grey)


def test_jet_differs_from_grey_and_is_rgb_ordered():
    ramp = np.arange(256, dtype=np.uint8)[None, :]
    jet = pseudo_colour(ramp, "jet")
    assert jet.shape == (3, 1, 256)
    assert not np.array_equal(jet, pseudo_colour(ramp, "gray3"))
    # JET runs blue -> red: low values have more blue (channel 2), high values more red (channel 0)
    assert jet[2, 0, 0] > jet[0, 0, 0]
    assert jet[0, 0, 255] > jet[2, 0, 255]


def test_colormap_names_and_unknown_name():
    names = colormap_names()
    assert "gray3" in names and "jet" in names and "turbo" in names
    assert pseudo_colour(np.zeros((2, 2), np.uint8), "JET").shape == (3, 2, 2)  # case-insensitive
    with pytest.raises(ConfigError, match="preprocess.colormap"):
        pseudo_colour(np.zeros((2, 2), np.uint8), "rainbow-unicorn")


@pytest.mark.parametrize(
    "kwargs, kind, in_shape, expected",
    [
        ({"xray_size": 64}, "xray", (96, 80), (3, 64, 64)),
        ({"xray_size": 32, "colormap": "gray3"}, "xray", (20, 30), (3, 32, 32)),
        ({"ct_size": 48, "xray_size": 64}, "ct_slice2d", (50, 50), (3, 48, 48)),
        ({"xray_size": 16, "xray_normalise": "percentile"}, "xray", (40, 40), (3, 16, 16)),
    ],
)
def test_preprocess_2d_shapes(kwargs, kind, in_shape, expected, make_xray):
    cfg = PreprocessConfig(**kwargs)
    out = preprocess_2d(make_xray(*in_shape), cfg, kind=kind)
    assert out.shape == expected and out.dtype == np.uint8
    assert out.min() >= 0 and out.max() <= 255 and out.max() > out.min()


def test_preprocess_2d_gray3_channels_equal_grey_image(make_xray):
    cfg = PreprocessConfig(xray_size=32, colormap="gray3")
    img = make_xray(60, 50)
    out = preprocess_2d(img, cfg)
    np.testing.assert_array_equal(out[1], grey_2d(img, cfg))


def test_preprocess_2d_unknown_kind(make_xray):
    with pytest.raises(DataError, match="kind"):
        preprocess_2d(make_xray(10, 10), PreprocessConfig(), kind="ct_volume")


def test_crop_box_clips_and_rejects_outside():
    img = np.arange(100, dtype=np.uint8).reshape(10, 10)
    np.testing.assert_array_equal(crop_box(img, (2, 3, 5, 4)), img[3:4, 2:5])
    assert crop_box(img, (-5, -5, 2.2, 2.2)).shape == (3, 3)  # clipped, rounded outward
    with pytest.raises(DataError, match="outside"):
        crop_box(img, (20, 20, 30, 30), what="record q")


def test_lesion_crop_shape(make_xray):
    cfg = PreprocessConfig(crop_size=24)
    grey = normalise_to_uint8(make_xray(80, 80))
    out = lesion_crop(grey, (10, 10, 30, 42), cfg)
    assert out.shape == (3, 24, 24) and out.dtype == np.uint8


def test_equalisation_undoes_a_sources_tone_curve_that_min_max_keeps():
    """Two sources rendering the same anatomy with different tone curves (gamma 0.5 vs 2): min-max keeps the
    difference, per-image histogram equalisation (rank-based) maps both onto nearly the same image."""
    yy, xx = np.mgrid[:96, :96]
    ramp = (xx + yy * 96).astype(np.float32) / (96 * 96)
    paper, lever = PreprocessConfig(xray_size=96), PreprocessConfig(xray_size=96, intensity="equalise")
    gap_paper = np.abs(grey_2d(ramp**0.5, paper).astype(float) - grey_2d(ramp**2, paper)).mean()
    gap_lever = np.abs(grey_2d(ramp**0.5, lever).astype(float) - grey_2d(ramp**2, lever)).mean()
    assert gap_paper > 50 and gap_lever < gap_paper / 8


def test_clahe_is_opencvs_clahe_on_the_resized_grey_image(make_xray):
    import cv2

    img = make_xray(120, 100)
    cfg = PreprocessConfig(xray_size=64, intensity="clahe", clahe_clip_limit=3.0, clahe_tiles=4)
    resized = resize_2d(normalise_to_uint8(img), 64)
    expected = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(resized)
    assert np.array_equal(grey_2d(img, cfg), expected) and not np.array_equal(expected, resized)


def test_intensity_none_is_the_papers_path_and_the_lever_reaches_preprocess_2d(make_xray):
    img = make_xray(80, 80)
    paper = PreprocessConfig(xray_size=64)
    assert np.array_equal(grey_2d(img, paper), resize_2d(normalise_to_uint8(img), 64))
    clahe = PreprocessConfig(xray_size=64, intensity="clahe", colormap="gray3")
    out = preprocess_2d(img, clahe, kind="xray")
    assert np.array_equal(out[0], grey_2d(img, clahe)) and not np.array_equal(out[0], grey_2d(img, paper))
    stronger = PreprocessConfig(xray_size=64, intensity="clahe", clahe_clip_limit=8.0, colormap="gray3")
    assert not np.array_equal(preprocess_2d(img, stronger, kind="xray"), out)


def test_intensity_is_named_in_the_input_spec_only_when_on():
    from covidscan.preprocess.spec import input_spec

    for kind in ("xray", "ct_slice2d"):
        assert "intensity" not in input_spec(kind, PreprocessConfig()).params
        on = input_spec(kind, PreprocessConfig(intensity="clahe", clahe_tiles=4)).params
        assert on["intensity"] == "clahe" and on["clahe_tiles"] == 4
        assert "clahe_tiles" not in input_spec(kind, PreprocessConfig(intensity="equalise")).params


def test_unknown_intensity_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="intensity"):
        PreprocessConfig(intensity="gamma")
