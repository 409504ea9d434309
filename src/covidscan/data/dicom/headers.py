"""Accepted modalities and SOP classes, size constants, header value parsing and the ``meta`` whitelist."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from covidscan.data.dicom.errors import HeaderValueError, _fail

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- constants
XRAY_MODALITIES = frozenset({"CR", "DX"})
CT_MODALITIES = frozenset({"CT"})

#: SOP classes accepted. Secondary Capture is accepted because public X-ray sets use it; the
#: Modality check still applies to it.
SUPPORTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte SC Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word SC Image Storage",
}

#: Header fields that may be copied into ``meta`` (technical, non-identifying). Nothing else is.
META_FIELDS: tuple[str, ...] = (
    "Modality",
    "SOPClassUID",
    "Manufacturer",
    "ManufacturerModelName",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "KVP",
    "ConvolutionKernel",
    "BodyPartExamined",
    "ViewPosition",
    "PatientPosition",
    "ImageOrientationPatient",
    "PixelPaddingValue",
)

_MB = 1024 * 1024
_UNDEFINED = 0xFFFFFFFF


# ----------------------------------------------------------------------------------- header values
def _plain(value: Any) -> Any:
    """A header value as plain Python (str/int/float/list), for meta and reports."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (int, float, str)):
        # DSfloat/IS/UID/PersonName subclasses -> base types
        for base in (bool, int, float, str):
            if isinstance(value, base):
                return base(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _number(ds: Dataset, keyword: str, path: Path, *, default: float | None = None) -> float | None:
    """A numeric header value (first value if multi-valued), or `default` when absent."""
    try:
        value = ds[keyword].value if keyword in ds else None
    except Exception as err:  # noqa: BLE001 - a value pydicom cannot convert
        raise _fail(HeaderValueError, path, f"{keyword} cannot be parsed ({type(err).__name__}: {err})") from None
    if value in (None, ""):
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return default
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(HeaderValueError, path, f"{keyword} = {value!r} is not a number") from None
    if not math.isfinite(number):
        raise _fail(HeaderValueError, path, f"{keyword} = {value!r} is not finite")
    return number


def _vector(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray | None:
    """A numeric multi-valued element of exactly `n` values as float64, or None when absent."""
    try:
        value = ds[keyword].value if keyword in ds else None
    except Exception as err:  # noqa: BLE001 - a value pydicom cannot convert
        raise _fail(HeaderValueError, path, f"{keyword} cannot be parsed ({type(err).__name__}: {err})") from None
    if value in (None, ""):
        return None
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    try:
        out = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(HeaderValueError, path, f"{keyword} = {values!r} is not numeric") from None
    if out.size != n or not np.all(np.isfinite(out)):
        raise _fail(HeaderValueError, path, f"{keyword} must hold {n} finite numbers, found {values!r}")
    return out


def _spacing_2d(ds: Dataset, path: Path) -> tuple[float, float]:
    """(row, col) spacing in mm from PixelSpacing, else ImagerPixelSpacing; NaN when absent or <= 0."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            vec = _vector(ds, keyword, 2, path)
        except HeaderValueError:
            log.warning("%s: ignoring unusable %s", path, keyword)
            vec = None
        if vec is not None and np.all(vec > 0):
            return float(vec[0]), float(vec[1])
    return math.nan, math.nan


def _ts_name(uid: str) -> str:
    try:
        name = UID(uid).name
    except Exception:  # noqa: BLE001 - a malformed UID only affects the label
        name = uid
    return name if name and name != uid else f"unknown transfer syntax {uid}"


def meta_from(ds: Dataset) -> dict[str, Any]:
    """The whitelisted technical fields of `ds` (:data:`META_FIELDS`) plus the transfer syntax.

    Args:
        ds: a dataset read by this module.

    Returns:
        A plain dict (str/int/float/list values) with no identifying field.
    """
    meta: dict[str, Any] = {}
    for keyword in META_FIELDS:
        if keyword in ds:
            try:
                value = ds[keyword].value
            except Exception:  # noqa: BLE001 - an unparsable optional field is left out
                continue
            if value not in (None, ""):
                meta[keyword] = _plain(value)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        meta["TransferSyntaxUID"] = str(ts)
        meta["TransferSyntaxName"] = _ts_name(str(ts))
    return meta
