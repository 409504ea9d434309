"""The reader on real public DICOM (../shared/realdata-dev/dicom); skipped when the folder is absent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from covidscan.cli import app
from covidscan.config import DicomLimits
from covidscan.data import dicom as D

DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "realdata-dev" / "dicom"
LIMITS = DicomLimits()

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not DICOM.is_dir(), reason="../shared/realdata-dev is absent"),
]


def _manifest() -> list[dict[str, str]]:
    with (DICOM / "manifest.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_monochrome1_cr_is_inverted():
    path = DICOM / "cxr_cr_rg1" / "RG1_UNCR.dcm"
    img = D.read_image(path, LIMITS)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert img.modality == "CR" and img.pixels.shape == (1955, 1841)
    assert img.meta["PhotometricInterpretation"] == "MONOCHROME1" and img.meta["inverted"] is True
    assert img.meta["BitsStored"] == 15 and img.meta["voi"] == "window"
    # bright = dense: the output runs opposite to the stored MONOCHROME1 values
    assert np.corrcoef(raw.ravel()[::97], img.pixels.ravel()[::97])[0, 1] < -0.99
    assert np.isnan(img.spacing).all()  # the file's PixelSpacing is 0\0


def test_jpeg2000_copy_decodes_close_to_the_original():
    ref = D.read_image(DICOM / "cxr_cr_rg1" / "RG1_UNCR.dcm", LIMITS).pixels
    j2k = D.read_image(DICOM / "cxr_cr_rg1" / "RG1_J2KI.dcm", LIMITS)
    assert j2k.meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.91" and j2k.pixels.shape == ref.shape
    assert np.corrcoef(ref.ravel()[::97], j2k.pixels.ravel()[::97])[0, 1] > 0.99
    assert np.abs(ref - j2k.pixels).mean() < 0.01 * (ref.max() - ref.min())  # lossy, but close


def test_lungdx_series_assembles_in_position_order():
    folder = DICOM / "ct_series_lungdx_A0002"
    ct = D.read_series(folder, LIMITS)
    rows = {r["path"].split("/")[-1]: r for r in _manifest() if "ct_series_lungdx_A0002" in r["path"]}
    z_manifest = sorted(float(r["image_position_z"]) for r in rows.values())
    assert ct.hu.shape == (30, 512, 512) and ct.hu.dtype == np.int16
    assert ct.spacing == pytest.approx((8.0, 0.646484375, 0.646484375))
    assert (ct.meta["z_first_mm"], ct.meta["z_last_mm"]) == pytest.approx((z_manifest[0], z_manifest[-1]))
    # ascending z along the normal (+z): the last file by name (z = 80) comes first
    z_of_paths = [float(rows[p.name]["image_position_z"]) for p in ct.paths]
    assert z_of_paths == sorted(z_of_paths) and ct.paths[0].name == "1-30.dcm"
    assert ct.hu.min() == -1024 and 1100 <= ct.hu.max() <= 1600
    reference = DICOM.parent / "npy" / "lungdx_A0002_ct_hu_zyx.npy"
    if reference.is_file():
        np.testing.assert_array_equal(ct.hu, np.load(reference, allow_pickle=False))


def test_nysbu_slices_read_as_hounsfield():
    files = sorted((DICOM / "ct_slices_nysbu").glob("*.dcm"))
    assert len(files) == 8
    for f in files:
        img = D.read_image(f, LIMITS)
        raw = pydicom.dcmread(f)
        assert img.modality == "CT" and img.pixels.shape == (512, 512)
        assert img.spacing == pytest.approx(tuple(float(v) for v in raw.PixelSpacing))
        stored = raw.pixel_array.astype(np.float64)
        hu = stored * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
        keep = stored != raw.get("PixelPaddingValue", np.inf)
        np.testing.assert_allclose(img.pixels[keep], hu[keep])
        assert np.all(img.pixels[~keep] == LIMITS.padding_hu)
        # air outside the body and soft tissue/bone inside
        assert img.pixels.min() <= -900 and img.pixels.max() >= 300


def test_nysbu_folder_is_a_mixed_series():
    with pytest.raises(D.MixedSeriesError, match="8 different series"):
        D.read_series(DICOM / "ct_slices_nysbu", LIMITS)


runner = CliRunner()


def test_inspect_reads_every_file(tmp_path):
    files = sorted(DICOM.glob("*/*.dcm"))
    assert len(files) == 40
    for f in files:  # every file on its own (the series slices as single CT images)
        result = runner.invoke(app, ["inspect", str(f), "--params", str(tmp_path / "absent.yaml")])
        assert result.exit_code == 0, result.output
        assert str(f) in result.output and "transfer syntax" in result.output
    series = runner.invoke(app, ["inspect", str(DICOM / "ct_series_lungdx_A0002"), "--params", str(tmp_path / "x.yaml")])
    assert series.exit_code == 0, series.output
    assert "30 x 512 x 512" in series.output and "8 x 0.6465 x 0.6465 mm" in series.output
    assert "80.00 .. 312.00 mm" in series.output and "-1024 .." in series.output and "axial" in series.output
