"""read_series: folder and multi-frame assembly in position order, the series checks, and resampling."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import uid as U

from covidscan.config import DicomLimits
from covidscan.data import dicom as D
from tests.data import dicom_factory as fx

LIMITS = DicomLimits()


def test_shuffled_names_and_instance_numbers_assemble_in_position_order(tmp_path):
    vol = fx.volume(7)
    paths = fx.write_series(tmp_path / "s", vol, z0=-40.0, spacing_z=2.5, shuffle_seed=3)
    by_name = sorted(p.name for p in paths)
    assert [p.name for p in paths] != by_name  # the test would be vacuous otherwise
    ct = D.read_series(tmp_path / "s", LIMITS)
    assert ct.hu.dtype == np.int16 and ct.hu.shape == vol.shape
    np.testing.assert_array_equal(ct.hu, vol)
    assert ct.paths == tuple(paths)
    assert ct.spacing == pytest.approx((2.5, 0.7, 0.7))
    assert ct.meta["n_slices"] == 7 and ct.meta["z_first_mm"] == pytest.approx(-40.0)
    assert ct.meta["z_last_mm"] == pytest.approx(-40.0 + 6 * 2.5)
    for sentinel in fx.SENTINELS.values():
        assert sentinel not in repr(ct.meta)


def test_order_follows_the_slice_normal_not_z(tmp_path):
    # rows along +x, columns along -y: the normal is -z, so ascending order along it is descending z
    orientation = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    vol = fx.volume(5)
    paths = fx.write_series(tmp_path / "s", vol, spacing_z=3.0, orientation=orientation)
    ct = D.read_series(tmp_path / "s", LIMITS)
    np.testing.assert_array_equal(ct.hu, vol)
    assert ct.paths == tuple(paths)


def test_small_gantry_tilt_is_axial(tmp_path):
    t = np.radians(10)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t)))
    fx.write_series(tmp_path / "s", fx.volume(4), orientation=orientation)
    ct = D.read_series(tmp_path / "s", LIMITS)
    assert ct.meta["tilt_deg"] == pytest.approx(10.0, abs=1e-3)


@pytest.mark.parametrize("syntax", [U.RLELossless, U.JPEGLSLossless, U.ExplicitVRBigEndian], ids=lambda u: u.name)
def test_compressed_series(tmp_path, syntax):
    vol = fx.volume(4)
    fx.write_series(tmp_path / "s", vol, syntax=syntax)
    ct = D.read_series(tmp_path / "s", LIMITS)
    np.testing.assert_array_equal(ct.hu, vol)
    assert ct.meta["transfer_syntaxes"] == [syntax]


@pytest.mark.parametrize("per_frame_rescale", [False, True])
def test_enhanced_multiframe_uses_per_frame_positions(tmp_path, per_frame_rescale):
    vol = fx.volume(6)
    z = np.array([10.0, 0.0, 25.0, 5.0, 20.0, 15.0])  # frames stored out of order
    ds = fx.enhanced_ct(vol, [(-100.0, -120.0, zz) for zz in z], per_frame_rescale=per_frame_rescale)
    path = fx.save(ds, tmp_path / "mf.dcm")
    ct = D.read_series(path, LIMITS)
    order = np.argsort(z)
    np.testing.assert_array_equal(ct.hu, vol[order])
    assert ct.spacing == pytest.approx((5.0, 0.7, 0.7)) and ct.paths == (path,)
    assert ct.meta["series_source"] == "multiframe"


def test_enhanced_multiframe_compressed(tmp_path):
    vol = fx.volume(4, 32, 32)
    ds = fx.enhanced_ct(vol, [(0.0, 0.0, 2.0 * k) for k in range(4)])
    path = fx.save(ds, tmp_path / "mf.dcm", U.JPEG2000Lossless)
    np.testing.assert_array_equal(D.read_series(path, LIMITS).hu, vol)


def _write(tmp_path, z, **kwargs):
    fx.write_series(tmp_path / "s", fx.volume(len(z)), z_positions=z, **kwargs)
    return tmp_path / "s"


@pytest.mark.parametrize(
    ("z", "error", "fragment"),
    [
        ([0.0, 2.0, 2.0, 4.0], D.DuplicateSliceError, "same position"),
        ([0.0, 2.0, 4.0, 8.0, 10.0], D.SliceGapError, "1 slice(s) missing"),
        ([0.0, 2.0, 4.0, 10.0, 12.0], D.SliceGapError, "2 slice(s) missing"),
        ([0.0, 2.0, 4.5, 6.0, 8.0], D.SliceSpacingError, "non-uniform slice spacing"),
    ],
    ids=["duplicate", "gap", "gap2", "non-uniform"],
)
def test_position_problems_are_refused(tmp_path, z, error, fragment):
    folder = _write(tmp_path, z)
    with pytest.raises(error) as info:
        D.read_series(folder, LIMITS)
    assert str(info.value).startswith(str(folder)) or str(folder) in str(info.value)
    assert fragment in str(info.value)


def test_spacing_within_tolerance_is_accepted(tmp_path):
    folder = _write(tmp_path, [0.0, 2.0, 4.02, 6.0, 7.99])
    assert D.read_series(folder, LIMITS).spacing[0] == pytest.approx(7.99 / 4)


@pytest.mark.parametrize(
    ("orientation", "plane"), [(fx.CORONAL, "coronal"), (fx.SAGITTAL, "sagittal")], ids=["coronal", "sagittal"]
)
def test_non_axial_is_refused(tmp_path, orientation, plane):
    folder = _write(tmp_path, [0.0, 2.0, 4.0], orientation=orientation)
    with pytest.raises(D.NonAxialError, match=f"{plane} slices"):
        D.read_series(folder, LIMITS)


def test_mixed_series_is_refused(tmp_path):
    fx.write_series(tmp_path / "s", fx.volume(3))
    fx.write_series(tmp_path / "other", fx.volume(2))
    for p in (tmp_path / "other").iterdir():
        p.rename(tmp_path / "s" / f"x_{p.name}")
    with pytest.raises(D.MixedSeriesError, match="2 different series"):
        D.read_series(tmp_path / "s", LIMITS)


def test_inconsistent_matrix_is_refused(tmp_path):
    paths = fx.write_series(tmp_path / "s", fx.volume(3))
    ds = fx.pydicom_read(paths[1])
    other = fx.ct_slice(fx.ramp(8, 8), position=ds.ImagePositionPatient, series_uid=ds.SeriesInstanceUID)
    fx.save(other, paths[1])
    with pytest.raises(D.InconsistentSeriesError, match="8 x 8 pixels"):
        D.read_series(tmp_path / "s", LIMITS)


def test_missing_position_is_refused(tmp_path):
    paths = fx.write_series(tmp_path / "s", fx.volume(3))
    ds = fx.pydicom_read(paths[2])
    del ds.ImagePositionPatient
    ds.save_as(paths[2])
    with pytest.raises(D.MissingGeometryError, match="no ImagePositionPatient") as info:
        D.read_series(tmp_path / "s", LIMITS)
    assert str(paths[2]) in str(info.value)


def test_one_bad_slice_names_that_file(tmp_path):
    paths = fx.write_series(tmp_path / "s", fx.volume(3))
    ds = fx.pydicom_read(paths[1])
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(paths[1])
    with pytest.raises(D.MissingRescaleError) as info:
        D.read_series(tmp_path / "s", LIMITS)
    assert str(info.value).startswith(str(paths[1]))


def test_xray_in_a_ct_folder_is_refused(tmp_path):
    fx.write_series(tmp_path / "s", fx.volume(3))
    fx.save(fx.xray(), tmp_path / "s" / "cr.dcm")
    with pytest.raises(D.WrongModalityError, match="Modality is 'CR', expected CT"):
        D.read_series(tmp_path / "s", LIMITS)


def test_empty_single_and_too_many(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.TooFewSlicesError, match="no DICOM files"):
        D.read_series(tmp_path / "empty", LIMITS)
    fx.write_series(tmp_path / "one", fx.volume(1))
    with pytest.raises(D.TooFewSlicesError, match="needs at least two"):
        D.read_series(tmp_path / "one", LIMITS)
    fx.write_series(tmp_path / "many", fx.volume(4))
    with pytest.raises(D.TooFewSlicesError, match="max_series_slices"):
        D.read_series(tmp_path / "many", DicomLimits(max_series_slices=3))


def test_volume_size_cap_before_decoding(tmp_path):
    fx.write_series(tmp_path / "s", fx.volume(4, 64, 64))
    with pytest.raises(D.ImageTooLargeError, match="max_pixels_mb"):
        D.read_series(tmp_path / "s", DicomLimits(max_pixels_mb=0.02))
