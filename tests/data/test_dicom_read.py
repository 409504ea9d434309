"""read_image / read_header on real DICOM files written with pydicom: LUTs, photometric, bits, spacing,
every transfer syntax with an encoder here, and the meta whitelist."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom import uid as U

from covidscan.config import DicomLimits
from covidscan.data.dicom import META_FIELDS, read_header, read_image
from tests.data import dicom_factory as fx

LIMITS = DicomLimits()


def test_cr_monochrome2_is_stored_values(tmp_path):
    stored = fx.ramp(hi=4095)
    img = read_image(fx.save(fx.xray(stored), tmp_path / "cr.dcm"), LIMITS)
    assert img.modality == "CR" and img.pixels.dtype == np.float32 and img.pixels.shape == stored.shape
    np.testing.assert_array_equal(img.pixels, stored)
    assert img.meta["inverted"] is False and img.meta["voi"] == "none"


def test_cr_monochrome1_is_inverted_so_bright_is_dense(tmp_path):
    stored = fx.ramp(hi=4095)
    img = read_image(fx.save(fx.xray(stored, photometric="MONOCHROME1"), tmp_path / "m1.dcm"), LIMITS)
    np.testing.assert_array_equal(img.pixels, 4095 - stored)  # 12-bit range 0..4095 reversed
    assert img.meta["inverted"] is True
    # the densest stored value (lowest in MONOCHROME1) is now the brightest
    assert img.pixels.flat[np.argmin(stored)] == img.pixels.max()


def test_window_is_applied_then_monochrome1_inverted(tmp_path):
    stored = fx.ramp(hi=4095)
    c, w = 2000.0, 1001.0
    m2 = read_image(fx.save(fx.xray(stored, window=(c, w)), tmp_path / "w2.dcm"), LIMITS).pixels
    m1 = read_image(fx.save(fx.xray(stored, window=(c, w), photometric="MONOCHROME1"), tmp_path / "w1.dcm"), LIMITS).pixels
    low, high = stored <= c - 0.5 - (w - 1) / 2, stored > c - 0.5 + (w - 1) / 2
    assert low.any() and high.any() and (~low & ~high).any()
    assert np.all(m2[low] == 0) and np.all(m2[high] == 4095)
    mid = ~low & ~high
    expected_mid = ((stored[mid] - (c - 0.5)) / (w - 1) + 0.5) * 4095
    np.testing.assert_allclose(m2[mid], expected_mid, rtol=1e-5)
    np.testing.assert_allclose(m1, 4095 - m2, atol=1e-3)


def test_voi_lut_sequence_is_applied(tmp_path):
    stored = fx.ramp(hi=4095)
    lut = (np.sqrt(np.arange(4096)) * 1000).astype(np.int64)  # non-linear, 16-bit output
    img = read_image(fx.save(fx.xray(stored, voi_lut=lut, window=(100, 10)), tmp_path / "lut.dcm"), LIMITS)
    assert img.meta["voi"] == "lut"  # the LUT wins over the window
    np.testing.assert_array_equal(img.pixels, lut[stored])
    inv = read_image(fx.save(fx.xray(stored, voi_lut=lut, photometric="MONOCHROME1"), tmp_path / "lut1.dcm"), LIMITS)
    np.testing.assert_array_equal(inv.pixels, 65535 - lut[stored])


def test_dx_modality_rescale(tmp_path):
    stored = fx.ramp(hi=1000)
    img = read_image(fx.save(fx.xray(stored, modality="DX", rescale=(2.0, -10.0)), tmp_path / "dx.dcm"), LIMITS)
    assert img.modality == "DX"
    np.testing.assert_allclose(img.pixels, stored * 2.0 - 10.0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"pixel_spacing": (0.15, 0.2)}, (0.15, 0.2)),
        ({"pixel_spacing": None, "imager_spacing": (0.3, 0.25)}, (0.3, 0.25)),
        ({"pixel_spacing": (0.1, 0.1), "imager_spacing": (0.3, 0.3)}, (0.1, 0.1)),
        ({"pixel_spacing": (0.0, 0.0)}, (math.nan, math.nan)),
        ({"pixel_spacing": None}, (math.nan, math.nan)),
    ],
)
def test_spacing_pixel_then_imager_else_nan(tmp_path, kwargs, expected):
    img = read_image(fx.save(fx.xray(**kwargs), tmp_path / "s.dcm"), LIMITS)
    np.testing.assert_allclose(img.spacing, expected)


def test_bits_above_bits_stored_are_masked(tmp_path):
    stored = fx.ramp(hi=4095)
    ds = fx.xray(stored)
    ds.PixelData = (stored.astype(np.uint16) | 0xF000).astype("<u2").tobytes()  # overlay bits set
    img = read_image(fx.save(ds, tmp_path / "hb.dcm"), LIMITS)
    np.testing.assert_array_equal(img.pixels, stored)


def test_signed_12_bit_ct_is_sign_extended(tmp_path):
    hu = np.array([[-1000, -1], [0, 1000]], dtype=np.int64)
    ds = fx.ct_slice(hu, intercept=0.0)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = (hu.astype(np.int16).view(np.uint16) & 0x0FFF).astype("<u2").tobytes()  # no sign extension
    img = read_image(fx.save(ds, tmp_path / "s12.dcm"), LIMITS)
    np.testing.assert_array_equal(img.pixels, hu)


def test_ct_slice_is_hounsfield_with_padding_to_air(tmp_path):
    hu = fx.ramp(8, 8, lo=-1000, hi=1500)
    ds = fx.ct_slice(hu, slope=0.5, intercept=-1000.0, padding=-3000)
    stored = np.frombuffer(ds.PixelData, dtype="<i2").reshape(8, 8).copy()
    stored[0, 0] = -3000
    ds.PixelData = stored.tobytes()
    img = read_image(fx.save(ds, tmp_path / "ct.dcm"), LIMITS)
    expected = stored * 0.5 - 1000.0
    expected[0, 0] = LIMITS.padding_hu
    np.testing.assert_allclose(img.pixels, expected)
    assert img.meta["padding_pixels"] == 1 and img.spacing == (0.7, 0.7)
    kept = read_image(tmp_path / "ct.dcm", LIMITS.model_copy(update={"padding_hu": None}))
    assert kept.pixels[0, 0] == -3000 * 0.5 - 1000.0


def test_meta_is_whitelisted_and_carries_no_identifiers(tmp_path):
    img = read_image(fx.save(fx.xray(photometric="MONOCHROME1", window=(2000, 1000)), tmp_path / "id.dcm"), LIMITS)
    text = repr(img.meta)
    for sentinel in fx.SENTINELS.values():
        assert sentinel not in text
    derived = {"TransferSyntaxUID", "TransferSyntaxName", "voi", "inverted", "value_range", "padding_pixels"}
    assert set(img.meta) <= set(META_FIELDS) | derived
    assert img.meta["Manufacturer"] == "ACME Imaging" and img.meta["PhotometricInterpretation"] == "MONOCHROME1"


def test_read_header_has_no_pixel_data(tmp_path):
    ds = read_header(fx.save(fx.xray(), tmp_path / "h.dcm"), LIMITS)
    assert "PixelData" not in ds and ds.Rows == 32


def test_dataset_without_preamble_is_read(tmp_path):
    ds = fx.xray()
    path = tmp_path / "raw.dcm"
    del ds.file_meta
    ds.preamble = None
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    img = read_image(path, LIMITS)
    np.testing.assert_array_equal(img.pixels, fx.ramp(hi=4095))


LOSSLESS = [
    U.ExplicitVRLittleEndian,
    U.ImplicitVRLittleEndian,
    U.ExplicitVRBigEndian,
    U.DeflatedExplicitVRLittleEndian,
    U.RLELossless,
    U.JPEGLSLossless,
    U.JPEG2000Lossless,
    U.JPEGLosslessSV1,
    U.JPEGLossless,
]


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda u: u.name)
def test_lossless_syntaxes_decode_exactly_xray(tmp_path, syntax):
    stored = fx.ramp(64, 48, hi=4095)
    path = fx.save(fx.xray(stored, photometric="MONOCHROME1"), tmp_path / "x.dcm", syntax)
    img = read_image(path, LIMITS)
    assert img.meta["TransferSyntaxUID"] == syntax
    np.testing.assert_array_equal(img.pixels, 4095 - stored)


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda u: u.name)
def test_lossless_syntaxes_decode_exactly_ct(tmp_path, syntax):
    hu = fx.ramp(64, 48, lo=-1024, hi=2000)
    path = fx.save(fx.ct_slice(hu, intercept=0.0), tmp_path / "c.dcm", syntax)  # negative stored values
    img = read_image(path, LIMITS)
    assert img.meta["TransferSyntaxUID"] == syntax
    np.testing.assert_array_equal(img.pixels, hu)


def test_lossy_jpegls_and_j2k_decode_close(tmp_path):
    stored = fx.ramp(64, 48, hi=4095)
    ds = fx.xray(stored)
    ds.compress(U.JPEGLSNearLossless, jls_error=3)
    ds.save_as(tmp_path / "nl.dcm", enforce_file_format=True)
    near = read_image(tmp_path / "nl.dcm", LIMITS)
    assert np.abs(near.pixels - stored).max() <= 3
    ds = fx.xray(stored)
    ds.compress(U.JPEG2000, j2k_cr=[5, 2])
    ds.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    lossy = read_image(tmp_path / "j2k.dcm", LIMITS)
    assert np.abs(lossy.pixels - stored).mean() < 20


def test_jpeg_baseline_8bit_decodes_close(tmp_path):
    image = (fx.ramp(64, 48, hi=255)).astype(np.uint8)
    path = tmp_path / "jpg.dcm"
    fx.jpeg_baseline_xray(image).save_as(path, enforce_file_format=True)
    img = read_image(path, LIMITS)
    assert img.meta["TransferSyntaxUID"] == U.JPEGBaseline8Bit and img.modality == "DX"
    assert np.abs(img.pixels - image).mean() < 3
