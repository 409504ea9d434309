# placeholder: replaced by the dicom branch at merge
"""Minimal DICOM reader with the API of HELPERS.md, so the ingest branch runs on its own.

The real module (branch ``dicom``) owns photometric/LUT handling, size checks and series assembly;
this stand-in implements just enough of ``read_header``/``read_image``/``read_series`` for the
ingest tests. Keep the other branch's file at merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from covidscan.config import DicomLimits
from covidscan.errors import DicomError

_META_KEYS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "PhotometricInterpretation", "BitsStored",
    "Rows", "Columns",
)


@dataclass(frozen=True)
class DicomImage:
    pixels: np.ndarray
    modality: str
    spacing: tuple[float, float]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()


@dataclass(frozen=True)
class CTVolume:
    hu: np.ndarray
    spacing: tuple[float, float, float]
    meta: dict[str, Any] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()


def _meta(ds: pydicom.Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {k: ds.get(k) for k in _META_KEYS if k in ds}
    meta = {k: (int(v) if isinstance(v, int) else str(v)) for k, v in meta.items()}
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    meta["TransferSyntaxUID"] = str(tsuid) if tsuid else ""
    return meta


def _read(path: Path, limits: DicomLimits, pixels: bool) -> pydicom.Dataset:
    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: not a file")
    if path.stat().st_size > limits.max_file_mb * 1024 * 1024:
        raise DicomError(f"{path}: larger than {limits.max_file_mb} MB")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as err:  # noqa: BLE001 - any parse failure is a DicomError naming the file
        raise DicomError(f"{path}: not readable as DICOM ({type(err).__name__})") from None
    if int(ds.get("Rows", 0)) > limits.max_rows or int(ds.get("Columns", 0)) > limits.max_columns:
        raise DicomError(f"{path}: image larger than the configured limits")
    return ds


def _spacing2d(ds: pydicom.Dataset) -> tuple[float, float]:
    sp = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if sp is None or len(sp) < 2:
        return (float("nan"), float("nan"))
    return (float(sp[0]), float(sp[1]))


def read_header(path: str | Path, limits: DicomLimits) -> pydicom.Dataset:
    """The header of a DICOM file, without pixel data."""
    return _read(Path(path), limits, pixels=False)


def read_image(path: str | Path, limits: DicomLimits) -> DicomImage:
    """One 2D image: X-ray with Modality + VOI LUT (MONOCHROME1 inverted), CT in HU."""
    path = Path(path)
    ds = _read(path, limits, pixels=True)
    arr = ds.pixel_array
    modality = str(ds.get("Modality", ""))
    if modality == "CT":
        out = apply_modality_lut(arr, ds).astype(np.float32)
    else:
        out = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float32)
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            out = out.max() + out.min() - out
    return DicomImage(pixels=out, modality=modality, spacing=_spacing2d(ds), meta=_meta(ds), path=path)


def read_series(path: str | Path, limits: DicomLimits) -> CTVolume:
    """A CT volume from a folder of slices (ordered along the slice normal) or a multi-frame file."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DicomError(f"{path}: no DICOM files")
    if len(files) > limits.max_series_slices:
        raise DicomError(f"{path}: more than {limits.max_series_slices} slices")
    datasets = [_read(f, limits, pixels=True) for f in files]
    first = datasets[0]
    if len(datasets) == 1:
        arr = apply_modality_lut(first.pixel_array, first)
        hu = arr[None] if arr.ndim == 2 else arr
        dz = float(first.get("SliceThickness", float("nan")) or float("nan"))
    else:
        iop = np.asarray(first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=float)
        normal = np.cross(iop[:3], iop[3:])

        def position(ds: pydicom.Dataset) -> float:
            ipp = ds.get("ImagePositionPatient")
            return float(np.dot(normal, np.asarray(ipp, dtype=float))) if ipp else float(ds.get("InstanceNumber", 0))

        datasets.sort(key=position)
        hu = np.stack([apply_modality_lut(d.pixel_array, d) for d in datasets])
        pos = [position(d) for d in datasets]
        dz = float(np.median(np.diff(pos))) if len(pos) > 1 else float("nan")
    hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    sy, sx = _spacing2d(first)
    return CTVolume(hu=hu, spacing=(dz, sy, sx), meta=_meta(first), paths=tuple(files))
