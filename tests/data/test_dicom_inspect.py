"""`covidscan inspect` and inspect_path on generated DICOM: what a person sees for a file and a series."""

from __future__ import annotations

from typer.testing import CliRunner

from covidscan.cli import app
from covidscan.config import DicomLimits
from covidscan.data.dicom import inspect_path
from tests.data import dicom_factory as fx

runner = CliRunner()


def test_inspect_xray_file(tmp_path):
    path = fx.save(fx.xray(fx.ramp(hi=4095), photometric="MONOCHROME1", pixel_spacing=(0.15, 0.2)), tmp_path / "cr.dcm", "1.2.840.10008.1.2.5")
    text = inspect_path(path, DicomLimits()).render()
    assert text.splitlines()[0] == f"{path} (image)"
    for expected in ("CR (CR Image Storage)", "32 x 24 (rows x cols)", "0.15 x 0.2 mm", "RLE Lossless", "MONOCHROME1 inverted", "0.0 .. 4095.0"):
        assert expected in text, text
    for sentinel in fx.SENTINELS.values():
        assert sentinel not in text


def test_inspect_cli_series_folder_and_multiframe(tmp_path):
    fx.write_series(tmp_path / "s", fx.volume(5), z0=-10.0, spacing_z=2.5)
    mf = fx.save(fx.enhanced_ct(fx.volume(3), [(0.0, 0.0, 3.0 * k) for k in range(3)]), tmp_path / "mf.dcm")
    result = runner.invoke(app, ["inspect", str(tmp_path / "s"), str(mf), "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{tmp_path / 's'} (series)" in out and f"{mf} (series)" in out
    assert "5 x 16 x 12 (z x rows x cols)" in out and "2.5 x 0.7 x 0.7 mm" in out
    assert "-10.00 .. 0.00 mm" in out and "axial" in out and "HU range         -1000 .. 200" in out
    assert "3 x 16 x 12" in out and "multiframe" in out


def test_inspect_cli_bad_folder_is_one_line(tmp_path):
    fx.write_series(tmp_path / "s", fx.volume(3), orientation=fx.CORONAL)
    result = runner.invoke(app, ["inspect", str(tmp_path / "s"), "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert "coronal slices" in result.output and "Traceback" not in result.output
