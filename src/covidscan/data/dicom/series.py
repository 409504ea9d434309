"""CT series assembly: one folder of slices or one multi-frame file, ordered along the slice normal,
with orientation, duplicate, gap and uniform-spacing checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from covidscan.config import DicomLimits
from covidscan.data.dicom.checks import _check_image, _functional_item, _PixelSpec
from covidscan.data.dicom.errors import (
    DuplicateSliceError,
    HeaderValueError,
    ImageTooLargeError,
    InconsistentSeriesError,
    MissingGeometryError,
    MixedSeriesError,
    NonAxialError,
    SliceGapError,
    SliceSpacingError,
    TooFewSlicesError,
    UnexpectedMultiFrameError,
    _typed_errors,
)
from covidscan.data.dicom.files import _dcmread
from covidscan.data.dicom.headers import CT_MODALITIES, _MB, _spacing_2d, _vector, meta_from
from covidscan.data.dicom.image import _decode, _padding_mask, _rescale, _to_hu
from covidscan.data.dicom.results import CTVolume


# ------------------------------------------------------------------------------------------ series
@dataclass(frozen=True)
class _SliceGeom:
    label: str  # "<path>" or "<path> frame <i>"
    position: np.ndarray
    orientation: np.ndarray


def _slice_normal(orientation: np.ndarray, where: str) -> np.ndarray:
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if not (abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2 and abs(norm - 1) < 1e-2):
        raise HeaderValueError(
            f"{where}: ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors"
        )
    return normal / norm


def _check_axial(normal: np.ndarray, where: str, limits: DicomLimits) -> float:
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if tilt > limits.max_tilt_deg:
        axis = int(np.argmax(np.abs(normal)))
        plane = {0: "sagittal", 1: "coronal", 2: "oblique axial"}[axis]
        if abs(float(normal[axis])) < math.cos(math.radians(30)):
            plane = "oblique"
        raise NonAxialError(
            f"{where}: {plane} slices (normal {np.round(normal, 3).tolist()}, {tilt:.0f} degrees from the patient z axis, "
            f"limit {limits.max_tilt_deg:g}); expected axial CT"
        )
    return tilt


def _order_slices(geoms: list[_SliceGeom], where: str, limits: DicomLimits) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Sort by position along the normal; check orientation, duplicates, gaps, uniform spacing.

    Returns:
        (order, spacing_z, sorted positions along the normal, tilt in degrees).
    """
    first = geoms[0]
    for g in geoms[1:]:
        if not np.allclose(g.orientation, first.orientation, atol=1e-3):
            raise InconsistentSeriesError(
                f"{g.label}: ImageOrientationPatient {g.orientation.tolist()} differs from {first.label} "
                f"{first.orientation.tolist()}; one series must have one orientation"
            )
    normal = _slice_normal(first.orientation, first.label)
    tilt = _check_axial(normal, where, limits)
    dist = np.array([float(np.dot(g.position, normal)) for g in geoms])
    order = np.argsort(dist, kind="stable")
    z = dist[order]
    steps = np.diff(z)
    if len(steps) == 0:
        raise TooFewSlicesError(f"{where}: one slice; a CT series needs at least two")
    spacing = float(np.median(steps))
    dup = np.flatnonzero(steps < max(1e-3, 0.01 * spacing))
    if dup.size:
        a, b = geoms[order[dup[0]]], geoms[order[dup[0] + 1]]
        raise DuplicateSliceError(
            f"{b.label}: same position along the slice normal ({z[dup[0] + 1]:.3f} mm) as {a.label}; "
            f"{dup.size} duplicate slice(s) in {where}"
        )
    tol = max(limits.slice_spacing_tolerance * spacing, 1e-3)
    bad = np.flatnonzero(np.abs(steps - spacing) > tol)
    if bad.size:
        i = int(bad[0])
        a, b = geoms[order[i]], geoms[order[i + 1]]
        ratio = steps[i] / spacing
        k = round(ratio)
        if k >= 2 and abs(steps[i] - k * spacing) <= tol:
            raise SliceGapError(
                f"{where}: {k - 1} slice(s) missing between {a.label} (z={z[i]:.2f} mm) and {b.label} "
                f"(z={z[i + 1]:.2f} mm); step {steps[i]:.2f} mm vs spacing {spacing:.2f} mm"
            )
        raise SliceSpacingError(
            f"{where}: non-uniform slice spacing: {steps.min():.3f} to {steps.max():.3f} mm (median {spacing:.3f}, "
            f"tolerance {tol:.3f}); first irregular step between {a.label} and {b.label}"
        )
    spacing_z = float((z[-1] - z[0]) / (len(z) - 1))
    return order, spacing_z, z, tilt


def _series_files(folder: Path, limits: DicomLimits) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )
    if not files:
        subdirs = sum(1 for p in folder.iterdir() if p.is_dir())
        hint = f" (it has {subdirs} sub-folder(s); point at one series folder)" if subdirs else ""
        raise TooFewSlicesError(f"{folder}: no DICOM files in the folder{hint}")
    if len(files) > limits.max_series_slices:
        raise TooFewSlicesError(
            f"{folder}: {len(files)} files, more than max_series_slices {limits.max_series_slices}"
        )
    return files


def _volume_bytes_check(where: str, n: int, rows: int, cols: int, limits: DicomLimits) -> None:
    mb = n * rows * cols * 2 / _MB
    if n > limits.max_series_slices:
        raise ImageTooLargeError(f"{where}: {n} slices, more than max_series_slices {limits.max_series_slices}")
    if mb > limits.max_pixels_mb:
        raise ImageTooLargeError(f"{where}: {n} x {rows} x {cols} int16 volume is {mb:.0f} MB, over max_pixels_mb {limits.max_pixels_mb:g}")


def _hu_int16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


def _store_hu_int16(
    out: np.ndarray, stored: np.ndarray, slope: float, intercept: float, mask: np.ndarray | None, padding_hu: float | None
) -> None:
    """Write HU as int16 into `out`; in-place integer arithmetic when nothing can overflow (usual CT)."""
    integral = slope == int(slope) and intercept == int(intercept)
    if integral and (padding_hu is None or padding_hu == int(padding_hu)):
        lo, hi = int(stored.min()), int(stored.max())
        scaled = sorted((lo * int(slope), hi * int(slope)))
        final = (scaled[0] + int(intercept), scaled[1] + int(intercept))
        if all(-32768 <= v <= 32767 for v in (lo, hi, *scaled, *final)):
            np.copyto(out, stored, casting="unsafe")
            if slope != 1:
                np.multiply(out, int(slope), out=out, casting="unsafe")
            if intercept != 0:
                np.add(out, int(intercept), out=out, casting="unsafe")
            if mask is not None and padding_hu is not None:
                out[mask] = int(padding_hu)
            return
    out[...] = _hu_int16(_to_hu(stored, slope, intercept, mask, padding_hu))


def _read_folder(folder: Path, limits: DicomLimits) -> CTVolume:
    files = _series_files(folder, limits)
    headers: list[tuple[Path, Dataset, _PixelSpec]] = []
    for f in files:
        ds = _dcmread(f, limits, pixels=True)  # pixel data stays on disk (deferred)
        spec = _check_image(ds, f, limits, CT_MODALITIES)
        if spec.frames != 1:
            raise UnexpectedMultiFrameError(
                f"{f}: {spec.frames} frames inside a one-file-per-slice series folder {folder}"
            )
        headers.append((f, ds, spec))
    # one series only
    groups: dict[str, list[Path]] = {}
    for f, ds, _ in headers:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or "<none>"), []).append(f)
    if len(groups) > 1:
        examples = "; ".join(f"{len(v)} file(s) like {v[0].name}" for v in list(groups.values())[:3])
        examples += "; ..." if len(groups) > 3 else ""
        raise MixedSeriesError(f"{folder}: {len(groups)} different series (SeriesInstanceUID) in one folder: {examples}")
    if len(files) < 2:
        raise TooFewSlicesError(f"{folder}: {len(files)} slice; a CT series needs at least two (use read_image for one slice)")
    # consistent matrix and spacing
    f0, ds0, spec0 = headers[0]
    spacing0 = _spacing_2d(ds0, f0)
    geoms: list[_SliceGeom] = []
    for f, ds, spec in headers:
        if (spec.rows, spec.cols) != (spec0.rows, spec0.cols):
            raise InconsistentSeriesError(
                f"{f}: {spec.rows} x {spec.cols} pixels, but {f0.name} has {spec0.rows} x {spec0.cols}; one series, one matrix"
            )
        sp = _spacing_2d(ds, f)
        if not np.allclose(sp, spacing0, rtol=1e-3, equal_nan=True):
            raise InconsistentSeriesError(f"{f}: PixelSpacing {sp} differs from {f0.name} {spacing0}")
        pos = _vector(ds, "ImagePositionPatient", 3, f)
        ori = _vector(ds, "ImageOrientationPatient", 6, f)
        if pos is None or ori is None:
            missing = "ImagePositionPatient" if pos is None else "ImageOrientationPatient"
            raise MissingGeometryError(f"{f}: no {missing}; slices cannot be ordered along the slice normal")
        geoms.append(_SliceGeom(label=str(f), position=pos, orientation=ori))
    order, spacing_z, z, tilt = _order_slices(geoms, str(folder), limits)
    _volume_bytes_check(str(folder), len(files), spec0.rows, spec0.cols, limits)
    meta = meta_from(ds0)
    paths = tuple(headers[i][0] for i in order)
    hu = np.empty((len(files), spec0.rows, spec0.cols), dtype=np.int16)
    padding = 0
    syntaxes: set[str] = set()
    datasets: list[Dataset | None] = [ds for _, ds, _ in headers]
    del ds0
    for k, idx in enumerate(order):
        f, _, spec = headers[idx]
        ds = datasets[idx]
        assert ds is not None
        datasets[idx] = None  # each dataset (and its cached pixel array) is released after use
        stored = _decode(ds, f, spec)[0]
        slope, intercept = _rescale(ds, None, f)
        mask = _padding_mask(ds, stored, f)
        padding += int(mask.sum()) if mask is not None else 0
        _store_hu_int16(hu[k], stored, slope, intercept, mask, limits.padding_hu)
        syntaxes.add(spec.transfer_syntax)
        del ds, stored
    headers.clear()
    meta.update(_series_meta(z, tilt, len(files), padding, syntaxes, source="files"))
    return CTVolume(hu=hu, spacing=(spacing_z, spacing0[0], spacing0[1]), meta=meta, paths=paths)


def _series_meta(z: np.ndarray, tilt: float, n: int, padding: int, syntaxes: set[str], source: str) -> dict[str, Any]:
    return {
        "n_slices": n,
        "z_first_mm": float(z[0]),
        "z_last_mm": float(z[-1]),
        "orientation": "axial",
        "tilt_deg": round(tilt, 3),
        "padding_pixels": padding,
        "transfer_syntaxes": sorted(syntaxes),
        "series_source": source,
    }


def _read_multiframe(path: Path, limits: DicomLimits) -> CTVolume:
    ds = _dcmread(path, limits, pixels=True)
    spec = _check_image(ds, path, limits, CT_MODALITIES)
    if spec.frames < 2:
        raise TooFewSlicesError(f"{path}: a single-frame file; a CT series needs a folder of slices or a multi-frame file")
    _volume_bytes_check(str(path), spec.frames, spec.rows, spec.cols, limits)
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        raise MissingGeometryError(
            f"{path}: multi-frame CT without functional groups; per-frame ImagePositionPatient is needed to order the frames"
        )
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != spec.frames:
        raise MissingGeometryError(
            f"{path}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {spec.frames} frames"
        )
    geoms = []
    spacing0: tuple[float, float] | None = None
    for i in range(spec.frames):
        label = f"{path} frame {i + 1}"
        pos_item = _functional_item(ds, i, "PlanePositionSequence")
        ori_item = _functional_item(ds, i, "PlaneOrientationSequence")
        pos = _vector(pos_item, "ImagePositionPatient", 3, path) if pos_item is not None else None
        ori = _vector(ori_item, "ImageOrientationPatient", 6, path) if ori_item is not None else None
        if pos is None or ori is None:
            missing = "PlanePositionSequence/ImagePositionPatient" if pos is None else "PlaneOrientationSequence"
            raise MissingGeometryError(f"{label}: no {missing}; frames cannot be ordered along the slice normal")
        measures = _functional_item(ds, i, "PixelMeasuresSequence")
        sp = _spacing_2d(measures, path) if measures is not None else _spacing_2d(ds, path)
        if spacing0 is None:
            spacing0 = sp
        elif not np.allclose(sp, spacing0, rtol=1e-3, equal_nan=True):
            raise InconsistentSeriesError(f"{label}: PixelSpacing {sp} differs from frame 1 {spacing0}")
        geoms.append(_SliceGeom(label=label, position=pos, orientation=ori))
    order, spacing_z, z, tilt = _order_slices(geoms, str(path), limits)
    stored = _decode(ds, path, spec)
    hu = np.empty((spec.frames, spec.rows, spec.cols), dtype=np.int16)
    padding = 0
    for k, idx in enumerate(order):
        slope, intercept = _rescale(ds, int(idx), path)
        mask = _padding_mask(ds, stored[idx], path)
        padding += int(mask.sum()) if mask is not None else 0
        _store_hu_int16(hu[k], stored[idx], slope, intercept, mask, limits.padding_hu)
    del stored
    assert spacing0 is not None
    meta = meta_from(ds)
    meta.update(_series_meta(z, tilt, spec.frames, padding, {spec.transfer_syntax}, source="multiframe"))
    return CTVolume(hu=hu, spacing=(spacing_z, spacing0[0], spacing0[1]), meta=meta, paths=(path,))


def read_series(path: str | Path, limits: DicomLimits) -> CTVolume:
    """Assemble a CT series: a folder with one file per slice, or one multi-frame (enhanced) CT file.

    Slices are ordered by ImagePositionPatient projected on the slice normal (ascending), never by
    file name or InstanceNumber. The folder must hold exactly one series; slices must be axial,
    uniformly spaced (``limits.slice_spacing_tolerance``), without duplicates or gaps.

    Args:
        path: a series folder or a multi-frame CT file.
        limits: caps checked before decoding.

    Returns:
        The volume (int16 HU, (z, y, x)) with (z, y, x) spacing in mm.

    Raises:
        DicomError: a subclass naming the file/folder and the problem.
    """
    path = Path(path)
    with _typed_errors(path):
        if path.is_dir():
            return _read_folder(path, limits)
        return _read_multiframe(path, limits)
