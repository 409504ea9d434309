"""Reading one image: decoding, Modality/VOI LUT and MONOCHROME1 for X-ray, rescale to HU for CT."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from covidscan.config import DicomLimits
from covidscan.data.dicom.checks import _check_image, _functional_item, _PixelSpec
from covidscan.data.dicom.errors import (
    DecodeError,
    DecodeResourceError,
    HeaderValueError,
    MissingRescaleError,
    UnexpectedMultiFrameError,
    _fail,
    _typed_errors,
)
from covidscan.data.dicom.files import _dcmread
from covidscan.data.dicom.headers import CT_MODALITIES, XRAY_MODALITIES, _number, _spacing_2d, _ts_name, meta_from
from covidscan.data.dicom.results import DicomImage
from covidscan.errors import DicomError


# ---------------------------------------------------------------------------------------- decoding
def _decode(ds: Dataset, path: Path, spec: _PixelSpec) -> np.ndarray:
    """Stored values as an array of shape (frames, rows, cols) (typed errors only)."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        arr, _ = get_decoder(UID(spec.transfer_syntax)).as_array(ds, as_rgb=False)
    except MemoryError:
        raise _fail(DecodeResourceError, path, "out of memory while decoding the pixel data") from None
    except Exception as err:  # noqa: BLE001 - decoder failures on user input are user errors
        raise _fail(
            DecodeError, path, f"cannot decode the pixel data ({_ts_name(spec.transfer_syntax)}): {type(err).__name__}: {err}"
        ) from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.shape != (spec.frames, spec.rows, spec.cols):
        raise _fail(DecodeError, path, f"decoded shape {arr.shape} does not match the header ({spec.frames}, {spec.rows}, {spec.cols})")
    return arr


def _padding_mask(ds: Dataset, stored: np.ndarray, path: Path) -> np.ndarray | None:
    pad = _number(ds, "PixelPaddingValue", path)
    if pad is None:
        return None
    limit = _number(ds, "PixelPaddingRangeLimit", path)
    if limit is None:
        return stored == pad
    lo, hi = sorted((pad, limit))
    return (stored >= lo) & (stored <= hi)


def _rescale(ds: Dataset, frame: int | None, path: Path) -> tuple[float, float]:
    item = _functional_item(ds, frame, "PixelValueTransformationSequence")
    source = item if item is not None and "RescaleSlope" in item else ds
    slope = _number(source, "RescaleSlope", path)
    intercept = _number(source, "RescaleIntercept", path)
    if slope is None or intercept is None:
        raise _fail(MissingRescaleError, path, "CT image without RescaleSlope/RescaleIntercept")
    if slope == 0:
        raise _fail(HeaderValueError, path, "RescaleSlope is 0")
    return slope, intercept


def _to_hu(stored: np.ndarray, slope: float, intercept: float, mask: np.ndarray | None, padding_hu: float | None) -> np.ndarray:
    hu = stored.astype(np.float32)
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    if mask is not None and padding_hu is not None:
        hu[mask] = padding_hu
    return hu


def _xray_range(ds: Dataset, voi: str) -> tuple[float, float]:
    """Theoretical output range after the Modality and VOI LUTs (as pydicom computes it)."""
    if voi == "lut":
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        lo, hi = 0.0, float(2**bits - 1)
    elif int(ds.get("PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def _xray_pixels(ds: Dataset, stored: np.ndarray, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Modality LUT, VOI LUT where present, MONOCHROME1 inversion -> float32."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        arr = apply_modality_lut(stored, ds)
        if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
            voi = "lut"
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            voi = "window"
        else:
            voi = "none"
        if voi != "none":
            arr = apply_voi_lut(arr, ds, index=0, prefer_lut=True)
        lo, hi = _xray_range(ds, voi)
    except (DicomError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - an unusable LUT or window is a header problem
        raise _fail(HeaderValueError, path, f"cannot apply the Modality/VOI LUT ({type(err).__name__}: {err})") from None
    out = np.asarray(arr, dtype=np.float32)
    inverted = str(ds.PhotometricInterpretation).upper() == "MONOCHROME1"
    if inverted:
        out = np.float32(lo + hi) - out
    return out, {"voi": voi, "inverted": inverted, "value_range": (lo, hi)}


def _read_pixels(path: Path, limits: DicomLimits, modalities: frozenset[str]) -> tuple[Dataset, _PixelSpec, np.ndarray]:
    ds = _dcmread(path, limits, pixels=True)
    spec = _check_image(ds, path, limits, modalities)
    return ds, spec, _decode(ds, path, spec)


def read_image(
    path: str | Path, limits: DicomLimits, *, modalities: frozenset[str] | set[str] = XRAY_MODALITIES | CT_MODALITIES
) -> DicomImage:
    """Read one 2D image: an X-ray (CR/DX) or a single CT slice.

    Args:
        path: the DICOM file.
        limits: caps checked before decoding.
        modalities: the Modality values accepted (default CR, DX, CT).

    Returns:
        The image: X-ray after Modality/VOI LUT with MONOCHROME1 inverted; CT in Hounsfield units.

    Raises:
        DicomError: a subclass naming the file and the problem.
    """
    path = Path(path)
    with _typed_errors(path):
        return _read_image(path, limits, frozenset(modalities))


def _read_image(path: Path, limits: DicomLimits, modalities: frozenset[str]) -> DicomImage:
    ds, spec, stored = _read_pixels(path, limits, modalities)
    if spec.frames != 1:
        raise _fail(
            UnexpectedMultiFrameError, path, f"{spec.frames} frames; expected one image (use read_series for a multi-frame CT)"
        )
    meta = meta_from(ds)
    modality = str(ds.Modality).strip().upper()
    if modality == "CT":
        slope, intercept = _rescale(ds, 0, path)
        mask = _padding_mask(ds, stored[0], path)
        pixels = _to_hu(stored[0], slope, intercept, mask, limits.padding_hu)
        meta["padding_pixels"] = int(mask.sum()) if mask is not None else 0
        spacing = _spacing_2d(_functional_item(ds, 0, "PixelMeasuresSequence") or ds, path)
        if math.isnan(spacing[0]):
            spacing = _spacing_2d(ds, path)
    else:
        pixels, info = _xray_pixels(ds, stored[0], path)
        meta.update({"voi": info["voi"], "inverted": info["inverted"], "value_range": list(info["value_range"])})
        spacing = _spacing_2d(ds, path)
    return DicomImage(pixels=pixels, modality=modality, spacing=spacing, meta=meta, path=path)
