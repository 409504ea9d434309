"""Loaders and header readers for DICOM-backed records (X-ray files, CT series folders, multi-frame CT).

Pixel handling is :mod:`covidscan.data.dicom`'s; this module only adapts its results to
:class:`~covidscan.data.sources.Loaded`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from covidscan.config import DicomLimits
from covidscan.data import dicom
from covidscan.data.deid import is_burned_in
from covidscan.data.sources import Loaded
from covidscan.errors import DicomError


def series_files(folder: Path) -> list[Path]:
    """The files of a series folder (hidden files excluded), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def header_reader(path: Path, limits: DicomLimits) -> Callable[[], Dataset]:
    """Reads the header of a file, or of a series folder: the first slice declaring burned-in
    annotation if any does, else the first slice."""

    def header() -> Dataset:
        if not path.is_dir():
            return dicom.read_header(path, limits)
        files = series_files(path)
        if not files:
            raise DicomError(f"{path}: empty series folder")
        first = None
        for f in files:
            ds = dicom.read_header(f, limits)
            if first is None:
                first = ds
            if is_burned_in(ds):
                return ds
        return first

    return header


def image_loader(path: Path, limits: DicomLimits) -> Callable[[], Loaded]:
    """Loader for a 2D DICOM image (X-ray): float32 after the reader's LUT/photometric handling."""

    def load() -> Loaded:
        img = dicom.read_image(path, limits)
        return Loaded(
            array=np.ascontiguousarray(img.pixels, dtype=np.float32),
            spacing=(math.nan, float(img.spacing[0]), float(img.spacing[1])),
            meta=dict(img.meta),
        )

    return load


def _single_frame(path: Path, limits: DicomLimits) -> Loaded | None:
    """A single-frame CT file as a one-slice volume, or None when the file has several frames."""
    header = dicom.read_header(path, limits)
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        return None
    img = dicom.read_image(path, limits)
    hu = np.clip(np.rint(img.pixels), -32768, 32767).astype(np.int16)[None]
    try:
        dz = float(header.get("SpacingBetweenSlices") or header.get("SliceThickness") or math.nan)
    except (TypeError, ValueError):
        dz = math.nan
    return Loaded(array=hu, spacing=(dz, float(img.spacing[0]), float(img.spacing[1])), meta=dict(img.meta))


def series_loader(path: Path, limits: DicomLimits) -> Callable[[], Loaded]:
    """Loader for a CT series: int16 HU (z, y, x) from a folder of slices or a multi-frame file; a
    single-frame CT file becomes a one-slice volume."""

    def load() -> Loaded:
        if path.is_file():
            single = _single_frame(path, limits)
            if single is not None:
                return single
        vol = dicom.read_series(path, limits)
        return Loaded(
            array=np.ascontiguousarray(vol.hu, dtype=np.int16),
            spacing=tuple(float(s) for s in vol.spacing),  # type: ignore[arg-type]
            meta=dict(vol.meta),
        )

    return load
