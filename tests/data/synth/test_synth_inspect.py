"""Every file the generator writes passes the strict reader and `covidscan inspect`."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from covidscan.cli import app
from covidscan.config import DicomLimits
from covidscan.data.dicom import read_image, read_series


def test_every_case_reads_strictly_and_inspects(tiny_root: Path) -> None:
    limits = DicomLimits()
    with (tiny_root / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    paths = []
    for row in rows:
        path = tiny_root / row["path"]
        if row["modality"] == "xray":
            image = read_image(path, limits, modalities=("CR", "DX"))
            assert image.pixels.ndim == 2 and image.modality in ("CR", "DX")
        else:
            volume = read_series(path, limits)
            assert volume.hu.ndim == 3 and volume.hu.shape[0] >= 2
            body = volume.hu[volume.hu > -1500]  # one source pads outside the field of view with -3024
            assert body.size and -1100 <= body.min() and body.max() <= 3100
        paths.append(str(path))
    result = CliRunner().invoke(app, ["inspect", *paths])
    assert result.exit_code == 0, result.output
    assert "error" not in result.output.lower()
