"""Reading DICOM: chest X-ray (CR/DX) and CT images, CT series assembly, strict checks for untrusted files.

This module is the only place where photometric interpretation and LUT handling live:

* X-ray (CR, DX): Modality LUT (rescale or LUT sequence), then the VOI LUT (LUT sequence or the first
  window) where the file has one, then MONOCHROME1 is inverted so that bright = dense.
* CT: stored values x RescaleSlope + RescaleIntercept = Hounsfield units (rescale tags are required).
  Pixels equal to PixelPaddingValue (outside the reconstruction circle) become ``limits.padding_hu``.
* Series: a folder with one file per slice, or one (enhanced) multi-frame file. Slices are ordered by
  ImagePositionPatient projected on the slice normal (ImageOrientationPatient), never by file name or
  InstanceNumber; spacing must be uniform, without duplicates or gaps, and the series axial.

Every problem a file can cause is a :class:`~covidscan.errors.DicomError` subclass whose message
starts with the file's path. Sizes are checked against :class:`~covidscan.config.DicomLimits` (file
size, Rows x Columns x frames, the declared PixelData length, the codestream's own dimensions) before
anything large is read or decoded. :func:`decode_untrusted` additionally runs the decode in a child
process with an address-space limit and a timeout.

``meta`` dictionaries carry technical, non-identifying fields only (a whitelist, :data:`META_FIELDS`).

Headers are parsed with pydicom's reading validation set to RAISE (``config.strict_reading``), so
a file that ends inside an element is an error rather than a warning; pydicom's setting is global,
so those parses are serialised under a module lock (pixel decoding is not).
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from covidscan.config import DicomLimits
from covidscan.errors import DicomError

log = logging.getLogger(__name__)

__all__ = [
    "CTVolume",
    "DicomImage",
    "InspectReport",
    "decode_untrusted",
    "inspect_path",
    "read_header",
    "read_image",
    "read_series",
]


# ------------------------------------------------------------------------------------------ errors
class NotDicomError(DicomError):
    """The file is not DICOM (no 'DICM' marker, no data elements) or cannot be parsed."""


class EmptyFileError(NotDicomError):
    """The file has zero bytes."""


class FileTooLargeError(DicomError):
    """The file is larger than ``DicomLimits.max_file_mb``."""


class TruncatedError(DicomError):
    """The file ends before the end of a data element (header or pixel data)."""


class MissingPixelDataError(DicomError):
    """The file has no Pixel Data element (e.g. a structured report or a header-only file)."""


class ShortPixelDataError(DicomError):
    """Pixel Data holds fewer bytes than Rows x Columns x frames x bytes per sample."""


class ImageTooLargeError(DicomError):
    """Rows, Columns, NumberOfFrames or the decoded size exceed ``DicomLimits``."""


class PixelFormatError(DicomError):
    """The Image Pixel module is unusable (no Rows, BitsStored > BitsAllocated, odd BitsAllocated...)."""


class HeaderValueError(DicomError):
    """A header element holds a value that cannot be used (not a number, wrong multiplicity...)."""


class UnsupportedTransferSyntaxError(DicomError):
    """No installed decoder handles the file's transfer syntax."""


class DecodeError(DicomError):
    """The decoder failed on the (compressed) pixel data, or produced an unexpected shape."""


class WrongModalityError(DicomError):
    """The Modality is not the one expected (CR/DX for X-ray, CT for CT)."""


class UnsupportedSOPClassError(DicomError):
    """The SOP class is not an image this reader supports (e.g. RT Structure Set, MR, SR)."""


class UnexpectedMultiFrameError(DicomError):
    """A multi-frame file where a single image is expected."""


class MissingRescaleError(DicomError):
    """A CT image without RescaleSlope/RescaleIntercept: Hounsfield units cannot be computed."""


class ColourImageError(DicomError):
    """A colour image (RGB, YBR, PALETTE COLOR): chest X-ray and CT must be greyscale."""


class MixedSeriesError(DicomError):
    """A folder holds more than one series (SeriesInstanceUID)."""


class InconsistentSeriesError(DicomError):
    """Slices of one series differ in matrix size, pixel spacing or orientation."""


class MissingGeometryError(DicomError):
    """A CT slice lacks ImagePositionPatient/ImageOrientationPatient needed to order it."""


class SliceSpacingError(DicomError):
    """The slice positions are not uniformly spaced."""


class SliceGapError(SliceSpacingError):
    """One or more slices are missing from an otherwise uniform series."""


class DuplicateSliceError(DicomError):
    """Two slices share a position along the slice normal."""


class NonAxialError(DicomError):
    """The series is coronal, sagittal or too oblique; the pipeline expects axial CT."""


class TooFewSlicesError(DicomError):
    """A series folder (or multi-frame file) with fewer than two slices, or more than allowed."""


class DecodeTimeoutError(DicomError):
    """:func:`decode_untrusted` ran past its timeout."""


class DecodeResourceError(DicomError):
    """:func:`decode_untrusted` hit its memory cap or its worker process died."""


# ----------------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class DicomImage:
    """One 2D image: an X-ray, or one CT slice.

    Attributes:
        pixels: float32 (rows, cols). X-ray: Modality LUT + VOI LUT, MONOCHROME1 inverted (bright =
            dense). CT: Hounsfield units.
        modality: "CR" | "DX" | "CT".
        spacing: (row, col) in mm; NaN when absent.
        meta: technical, non-identifying fields only (see :data:`META_FIELDS`).
        path: the file read.
    """

    pixels: np.ndarray
    modality: str
    spacing: tuple[float, float]
    meta: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class CTVolume:
    """A CT series as a volume.

    Attributes:
        hu: int16 Hounsfield units (z, y, x), z ascending along the slice normal.
        spacing: (z, y, x) in mm.
        meta: technical, non-identifying fields only.
        paths: the files read, in z order (one path repeated per frame for a multi-frame file is not
            used: a multi-frame volume has a single path).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    meta: dict[str, Any]
    paths: tuple[Path, ...]


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
_DEFER = 4096  # bytes: larger values (pixel data) stay on disk until decoded
_UNDEFINED = 0xFFFFFFFF
_COLOUR = ("RGB", "YBR", "PALETTE", "HSV", "ARGB", "CMYK")
# pydicom's reading-validation mode is global; strict reads are serialised under this lock.
_READ_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------- small helpers
def _fail(cls: type[DicomError], path: Path | str, problem: str) -> DicomError:
    """Build a typed error whose message names the file first (one line: decoder texts are folded)."""
    return cls(f"{path}: {' '.join(problem.split())}")


@contextlib.contextmanager
def _typed_errors(path: Path) -> Iterator[None]:
    """At the public boundary: any failure on user input becomes a DicomError naming the file."""
    try:
        yield
    except DicomError:
        raise
    except MemoryError:
        raise _fail(DecodeResourceError, path, "out of memory while reading") from None
    except OSError as err:
        raise _fail(NotDicomError, path, f"cannot read the file ({type(err).__name__}: {err})") from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, struct.error) as err:
        log.debug("malformed DICOM %s", path, exc_info=True)
        raise _fail(HeaderValueError, path, f"malformed DICOM header ({type(err).__name__}: {err})") from None


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


# ------------------------------------------------------------------------------------- file level
def _looks_like_raw_dataset(head: bytes) -> bool:
    """True when the file starts with a data element of group 0002/0008 (DICOM without a preamble)."""
    if len(head) < 8:
        return False
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _check_file(path: Path, limits: DicomLimits) -> tuple[int, bool]:
    """Existence, emptiness, size cap and the DICOM signature; returns (size, has_preamble)."""
    if not path.exists():
        raise _fail(NotDicomError, path, "no such file")
    if path.is_dir():
        raise _fail(NotDicomError, path, "is a folder, expected a DICOM file")
    size = path.stat().st_size
    if size == 0:
        raise _fail(EmptyFileError, path, "empty file (0 bytes)")
    if size > limits.max_file_mb * _MB:
        raise _fail(
            FileTooLargeError, path, f"file is {size / _MB:.1f} MB, over the {limits.max_file_mb:g} MB limit (max_file_mb)"
        )
    with path.open("rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return size, True
    if _looks_like_raw_dataset(head):
        return size, False
    if len(head) < 132 and head.startswith(b"\x00" * min(len(head), 128)):
        raise _fail(TruncatedError, path, f"file ends after {size} bytes, inside the 128-byte DICOM preamble")
    raise _fail(NotDicomError, path, "not a DICOM file (no 'DICM' marker at byte 128 and no DICOM data element at the start)")


def _check_truncation(ds: Dataset, path: Path, size: int, has_preamble: bool) -> None:
    """Compare declared element lengths with the bytes actually in the file."""
    meta = getattr(ds, "file_meta", None)
    if has_preamble and meta is not None and "FileMetaInformationGroupLength" in meta:
        group_len = int(meta.FileMetaInformationGroupLength)
        if size < 132 + 12 + group_len:
            raise _fail(TruncatedError, path, f"file ends after {size} bytes, inside the file meta header")
    for tag in list(ds.keys()):
        elem = ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED:
            continue
        if elem.value is None:  # deferred: still on disk
            if elem.value_tell + elem.length > size:
                missing = elem.value_tell + elem.length - size
                raise _fail(
                    TruncatedError,
                    path,
                    f"file ends {missing} bytes before the end of element {elem.tag} "
                    f"(declared {elem.length} bytes); the file is truncated",
                )
        elif isinstance(elem.value, (bytes, bytearray)) and len(elem.value) < elem.length:
            raise _fail(
                TruncatedError,
                path,
                f"file ends inside element {elem.tag} (declared {elem.length} bytes, {len(elem.value)} present)",
            )


_DEFLATED = str(pydicom.uid.DeflatedExplicitVRLittleEndian)


def _is_deflated(path: Path) -> int | None:
    """The byte offset of the data set when the file uses Deflated Explicit VR Little Endian.

    A byte-level look at the file meta group (always explicit VR little endian), cheaper than a
    second parse; anything unexpected returns None and the full read reports the problem.
    """
    with path.open("rb") as fh:
        head = fh.read(144)
        # (0002,0000) UL 4 <group length> right after 'DICM'
        if len(head) < 144 or head[132:138] != b"\x02\x00\x00\x00UL":
            return None
        group_len = struct.unpack("<I", head[140:144])[0]
        meta = fh.read(min(group_len, 1 << 16))
    at = meta.find(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID
    if at < 0 or at + 8 > len(meta):
        return None
    length = struct.unpack("<H", meta[at + 6 : at + 8])[0]
    uid = meta[at + 8 : at + 8 + length].rstrip(b"\x00 ").decode("ascii", "replace")
    return 144 + group_len if uid == _DEFLATED else None


def _check_inflated_size(path: Path, offset: int, limits: DicomLimits) -> None:
    """Inflate a deflated data set in bounded chunks: refuse a 'zip bomb' before pydicom inflates it."""
    import zlib

    cap = int(limits.max_file_mb * _MB)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            while chunk := fh.read(1 << 20):
                data = inflater.decompress(chunk, cap + 1 - total)
                total += len(data)
                while inflater.unconsumed_tail and total <= cap:
                    data = inflater.decompress(inflater.unconsumed_tail, cap + 1 - total)
                    total += len(data)
                if total > cap:
                    raise _fail(
                        FileTooLargeError, path, f"deflated data set inflates to more than max_file_mb {limits.max_file_mb:g} MB"
                    )
    except zlib.error as err:
        raise _fail(NotDicomError, path, f"deflated data set cannot be inflated ({err})") from None


def _dcmread(path: Path, limits: DicomLimits, *, pixels: bool) -> Dataset:
    """Read a dataset strictly, leaving large values (pixel data) on disk; typed errors only."""
    size, has_preamble = _check_file(path, limits)
    deflated_at = _is_deflated(path) if has_preamble else None
    if deflated_at is not None:
        _check_inflated_size(path, deflated_at, limits)
    try:
        with _READ_LOCK, pydicom_config.strict_reading():
            ds = pydicom.dcmread(
                path,
                force=not has_preamble,
                # deferred values of a deflated file live in the inflated stream: read them now
                defer_size=_DEFER if pixels and deflated_at is None else None,
                stop_before_pixels=not pixels,
            )
    except EOFError as err:
        raise _fail(TruncatedError, path, f"file is truncated ({err})") from None
    except InvalidDicomError as err:
        raise _fail(NotDicomError, path, f"not a valid DICOM file ({err})") from None
    except MemoryError:
        raise _fail(ImageTooLargeError, path, "out of memory while parsing the header") from None
    except Exception as err:  # noqa: BLE001 - any parser failure on user input is a user error
        raise _fail(NotDicomError, path, f"cannot parse DICOM ({type(err).__name__}: {err})") from None
    _check_truncation(ds, path, size, has_preamble)
    if len(ds) == 0:
        raise _fail(NotDicomError, path, "no DICOM data elements found")
    meta = ds.file_meta if hasattr(ds, "file_meta") else None
    if meta is None or "TransferSyntaxUID" not in meta:
        if has_preamble:
            raise _fail(NotDicomError, path, "file meta header has no Transfer Syntax UID (0002,0010)")
        implicit, little = ds.original_encoding
        ts = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit
            else (pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
        )
        ds.file_meta = ds.file_meta if meta is not None else pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    return ds


def read_header(path: str | Path, limits: DicomLimits) -> Dataset:
    """Read the header of a DICOM file, without its pixel data.

    Args:
        path: the file.
        limits: size caps (the file size is checked before reading).

    Returns:
        The dataset without Pixel Data (identifying fields included: callers must not log it).

    Raises:
        DicomError: a subclass naming the file (not DICOM, empty, truncated, too large).
    """
    path = Path(path)
    with _typed_errors(path):
        return _dcmread(path, limits, pixels=False)


# ------------------------------------------------------------------------------- image-level checks
def _frames(ds: Dataset, path: Path) -> int:
    value = _number(ds, "NumberOfFrames", path, default=1.0)
    assert value is not None
    if value != int(value) or value < 1:
        raise _fail(HeaderValueError, path, f"NumberOfFrames = {ds.NumberOfFrames!r} is not a positive integer")
    return int(value)


def _int_tag(ds: Dataset, keyword: str, path: Path) -> int:
    if keyword not in ds or ds[keyword].value in (None, ""):
        raise _fail(PixelFormatError, path, f"missing {keyword}; the Image Pixel module is incomplete")
    value = _number(ds, keyword, path)
    assert value is not None
    return int(value)


def _sop_class(ds: Dataset) -> str | None:
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return str(uid) if uid else None


def _has_rescale(ds: Dataset) -> bool:
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        return True
    item = _functional_item(ds, 0, "PixelValueTransformationSequence")  # per-frame, else shared
    return item is not None and "RescaleSlope" in item and "RescaleIntercept" in item


def _functional_item(ds: Dataset, frame: int | None, sequence: str) -> Dataset | None:
    """The first item of a functional group macro for `frame` (per-frame first, then shared)."""
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per_frame) and sequence in per_frame[frame] and len(per_frame[frame][sequence].value):
            return per_frame[frame][sequence].value[0]
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        shared = ds.SharedFunctionalGroupsSequence[0]
        if sequence in shared and len(shared[sequence].value):
            return shared[sequence].value[0]
    return None


@dataclass(frozen=True)
class _PixelSpec:
    rows: int
    cols: int
    frames: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    transfer_syntax: str
    compressed: bool


def _check_image(ds: Dataset, path: Path, limits: DicomLimits, modalities: frozenset[str]) -> _PixelSpec:
    """Every check that can be made from the header, before pixel data is read or decoded."""
    sop = _sop_class(ds)
    if sop is not None and sop not in SUPPORTED_SOP_CLASSES:
        try:
            name = UID(sop).name
        except Exception:  # noqa: BLE001
            name = sop
        raise _fail(
            UnsupportedSOPClassError,
            path,
            f"SOP class '{name}' is not a supported image (expected CR, DX, CT or Enhanced CT image storage)",
        )
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if not modality:
        raise _fail(WrongModalityError, path, f"no Modality (0008,0060); expected {'/'.join(sorted(modalities))}")
    if modality not in modalities:
        raise _fail(WrongModalityError, path, f"Modality is '{modality}', expected {'/'.join(sorted(modalities))}")
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f" ({other[0]} is not supported)" if other else ""
        raise _fail(MissingPixelDataError, path, f"no Pixel Data (7FE0,0010) element{what}")

    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = int(_number(ds, "SamplesPerPixel", path, default=1) or 1)
    if samples != 1 or photometric.startswith(_COLOUR):
        raise _fail(
            ColourImageError,
            path,
            f"colour image (PhotometricInterpretation '{photometric or '?'}', SamplesPerPixel {samples}); "
            "expected a greyscale MONOCHROME1/MONOCHROME2 image",
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise _fail(
            PixelFormatError, path, f"PhotometricInterpretation '{photometric or 'missing'}', expected MONOCHROME1 or MONOCHROME2"
        )

    rows, cols = _int_tag(ds, "Rows", path), _int_tag(ds, "Columns", path)
    if rows < 1 or cols < 1:
        raise _fail(PixelFormatError, path, f"image size {rows} x {cols} (Rows x Columns) has no pixels")
    frames = _frames(ds, path)
    if rows > limits.max_rows or cols > limits.max_columns:
        raise _fail(
            ImageTooLargeError,
            path,
            f"image size {rows} x {cols} (Rows x Columns) exceeds the limit {limits.max_rows} x {limits.max_columns}",
        )
    if frames > limits.max_frames:
        raise _fail(ImageTooLargeError, path, f"NumberOfFrames {frames} exceeds the limit {limits.max_frames} (max_frames)")
    decoded_mb = rows * cols * frames * 4 / _MB  # float32 output, the largest we produce
    if decoded_mb > limits.max_pixels_mb:
        raise _fail(
            ImageTooLargeError,
            path,
            f"{rows} x {cols} x {frames} frames would decode to {decoded_mb:.0f} MB, over max_pixels_mb {limits.max_pixels_mb:g}",
        )

    bits_allocated = _int_tag(ds, "BitsAllocated", path)
    bits_stored = int(_number(ds, "BitsStored", path, default=bits_allocated) or bits_allocated)
    representation = int(_number(ds, "PixelRepresentation", path, default=0) or 0)
    if bits_allocated not in (8, 16, 32):
        raise _fail(PixelFormatError, path, f"BitsAllocated {bits_allocated} is not supported (expected 8, 16 or 32)")
    if not 1 <= bits_stored <= bits_allocated:
        raise _fail(PixelFormatError, path, f"BitsStored {bits_stored} is not within 1..BitsAllocated ({bits_allocated})")
    if representation not in (0, 1):
        raise _fail(PixelFormatError, path, f"PixelRepresentation {representation} is not 0 or 1")
    high_bit = _number(ds, "HighBit", path)
    if high_bit is not None and int(high_bit) != bits_stored - 1:
        log.warning("%s: HighBit %d != BitsStored - 1 (%d); using BitsStored", path, int(high_bit), bits_stored - 1)

    ts = str(ds.file_meta.TransferSyntaxUID)
    _check_decoder(ts, path)
    compressed = UID(ts).is_compressed
    spec = _PixelSpec(rows, cols, frames, bits_allocated, bits_stored, representation == 1, photometric, ts, compressed)
    _check_pixel_data(ds, path, spec)

    if modality == "CT" and not _has_rescale(ds):
        raise _fail(
            MissingRescaleError, path, "CT image without RescaleSlope/RescaleIntercept; Hounsfield units cannot be computed"
        )
    return spec


def _check_decoder(ts: str, path: Path) -> None:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        uid = UID(ts)
        if not uid.is_valid or not uid.is_transfer_syntax:
            raise NotImplementedError
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise _fail(UnsupportedTransferSyntaxError, path, f"no decoder for transfer syntax '{_ts_name(ts)}' ({ts})") from None
    if not decoder.is_available:
        raise _fail(
            UnsupportedTransferSyntaxError,
            path,
            f"transfer syntax '{_ts_name(ts)}' needs a decoder plugin that is not installed "
            f"(pydicom plugins: {', '.join(decoder.missing_dependencies) or 'none'})",
        )


def _check_pixel_data(ds: Dataset, path: Path, spec: _PixelSpec) -> None:
    """PixelData length against the geometry (native) or the codestream header (compressed)."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    length = elem.length if isinstance(elem, RawDataElement) else len(ds.PixelData or b"")
    expected = spec.rows * spec.cols * spec.frames * (spec.bits_allocated // 8)
    if not spec.compressed:
        if length == _UNDEFINED:
            raise _fail(PixelFormatError, path, "native (uncompressed) Pixel Data with undefined length")
        if length == 0:
            raise _fail(MissingPixelDataError, path, "Pixel Data element is empty (0 bytes)")
        if length < expected:
            raise _fail(
                ShortPixelDataError,
                path,
                f"Pixel Data has {length} bytes, expected {expected} for {spec.rows} x {spec.cols} x "
                f"{spec.frames} frame(s) at {spec.bits_allocated} bits",
            )
        return
    if isinstance(elem, RawDataElement) and elem.length != _UNDEFINED:
        raise _fail(DecodeError, path, "compressed Pixel Data must be encapsulated (undefined length)")
    data = ds.PixelData
    if not data:
        raise _fail(MissingPixelDataError, path, "encapsulated Pixel Data is empty")
    from pydicom.encaps import generate_frames

    # every frame's codestream must declare the header's size: decoders allocate from the codestream
    count = 0
    try:
        for count, frame in enumerate(generate_frames(data, number_of_frames=spec.frames), start=1):
            dims = _codestream_size(frame, spec.transfer_syntax)
            if dims is not None and dims != (spec.rows, spec.cols):
                where = f"compressed frame {count}" if spec.frames > 1 else "the compressed frame"
                raise _fail(
                    DecodeError,
                    path,
                    f"{where} is {dims[0]} x {dims[1]} but the header says {spec.rows} x {spec.cols} (Rows x Columns)",
                )
    except (DicomError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001
        raise _fail(DecodeError, path, f"cannot parse the encapsulated Pixel Data ({type(err).__name__}: {err})") from None
    if count < spec.frames:
        raise _fail(ShortPixelDataError, path, f"encapsulated Pixel Data holds {count} frame(s), NumberOfFrames is {spec.frames}")


def _codestream_size(frame: bytes, ts: str) -> tuple[int, int] | None:
    """(rows, cols) declared by a JPEG / JPEG-LS / JPEG 2000 codestream, or None if not applicable."""
    if ts.startswith("1.2.840.10008.1.2.4.9") or ts.startswith("1.2.840.10008.1.2.4.20"):  # J2K / HTJ2K
        offset = 0
        if frame[:8] == b"\x00\x00\x00\x0c\x6a\x50\x20\x20":  # JP2 wrapper: find the jp2c box
            offset = 12
            while offset + 8 <= len(frame):
                box_len = struct.unpack(">I", frame[offset : offset + 4])[0]
                if frame[offset + 4 : offset + 8] == b"jp2c":
                    offset += 8
                    break
                if box_len < 8:
                    return None
                offset += box_len
        if frame[offset : offset + 4] != b"\xff\x4f\xff\x51" or len(frame) < offset + 24:
            return None
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", frame[offset + 8 : offset + 24])
        return ysiz - yosiz, xsiz - xosiz
    if ts.startswith("1.2.840.10008.1.2.4.5") or ts.startswith("1.2.840.10008.1.2.4.7") or ts.startswith("1.2.840.10008.1.2.4.8"):
        if frame[:2] != b"\xff\xd8":
            return None
        offset = 2
        sof = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
        while offset + 9 <= len(frame):
            if frame[offset] != 0xFF:
                return None
            marker = frame[offset + 1]
            if marker in sof:
                rows, cols = struct.unpack(">HH", frame[offset + 5 : offset + 9])
                return rows, cols
            seg_len = struct.unpack(">H", frame[offset + 2 : offset + 4])[0]
            offset += 2 + seg_len
        return None
    return None


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


# ------------------------------------------------------------------------------ untrusted decoding
def _address_space_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read_any(path: Path, limits: DicomLimits, kind: str) -> DicomImage | CTVolume:
    if kind == "series" or (kind == "auto" and path.is_dir()):
        return read_series(path, limits)
    if kind == "auto":
        ds = read_header(path, limits)
        frames = int(_number(ds, "NumberOfFrames", path, default=1) or 1)
        if str(ds.get("Modality", "")).upper() == "CT" and frames > 1:
            return read_series(path, limits)
    return read_image(path, limits)


def _untrusted_worker(conn: Any, path: str, limits_json: str, kind: str, max_memory_mb: float) -> None:
    """Child process: cap the address space, decode, send the result (array bytes out of band)."""
    try:
        import resource

        for module in ("gdcm", "openjpeg", "jpeg_ls", "pylibjpeg"):  # map decoder libraries before the cap
            try:
                __import__(module)
            except Exception:  # noqa: BLE001
                pass
        cap = _address_space_bytes() + int(max_memory_mb * _MB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        limits = DicomLimits.model_validate_json(limits_json)
        result = _read_any(Path(path), limits, kind)
        array = result.pixels if isinstance(result, DicomImage) else result.hu
        array = np.ascontiguousarray(array)
        header = {
            "type": type(result).__name__,
            "shape": array.shape,
            "dtype": array.dtype.str,
            "fields": {k: v for k, v in vars(result).items() if k not in ("pixels", "hu")},
        }
        conn.send(("ok", header))
        conn.send_bytes(memoryview(array).cast("B"))
    except DicomError as err:
        conn.send(("error", err))
    except MemoryError:
        conn.send(("memory", None))
    except BaseException as err:  # noqa: BLE001 - report anything else as a decode failure
        conn.send(("crash", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def decode_untrusted(
    path: str | Path,
    limits: DicomLimits,
    *,
    max_memory_mb: float,
    timeout_s: float,
    kind: Literal["auto", "image", "series"] = "auto",
) -> DicomImage | CTVolume:
    """Decode an untrusted file or series folder in a child process with a memory cap and a timeout.

    The child (multiprocessing "spawn") imports the decoders, then limits its address space
    (``RLIMIT_AS``) to its size at that point plus ``max_memory_mb``, reads the input with every check
    of :func:`read_image` / :func:`read_series`, and sends the array back.

    Args:
        path: a DICOM file or a series folder.
        limits: caps checked before decoding.
        max_memory_mb: address space the decode may add on top of the worker's baseline.
        timeout_s: wall-clock limit for the whole decode; the worker is killed after it.
        kind: "image" (read_image), "series" (read_series) or "auto" (folder or multi-frame CT ->
            series, else image).

    Returns:
        A DicomImage or CTVolume, as the in-process readers return.

    Raises:
        DicomError: the reader's typed error, DecodeTimeoutError or DecodeResourceError.
    """
    import multiprocessing as mp

    path = Path(path)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_untrusted_worker,
        args=(child, str(path), limits.model_dump_json(), kind, float(max_memory_mb)),
        daemon=True,
    )
    deadline = time.monotonic() + timeout_s
    proc.start()
    child.close()
    try:
        if not parent.poll(max(0.0, deadline - time.monotonic())):
            if proc.is_alive():
                raise DecodeTimeoutError(f"{path}: decoding took longer than {timeout_s:g} s; stopped")
            raise DecodeResourceError(f"{path}: the decoding worker died (exit code {proc.exitcode})")
        try:
            status, payload = parent.recv()
        except EOFError:
            proc.join(1)
            raise DecodeResourceError(f"{path}: the decoding worker died (exit code {proc.exitcode})") from None
        if status == "error":
            if isinstance(payload, DecodeResourceError):
                raise DecodeResourceError(f"{payload} (worker limit max_memory_mb = {max_memory_mb:g})")
            raise payload
        if status == "memory":
            raise DecodeResourceError(f"{path}: decoding needs more than max_memory_mb = {max_memory_mb:g} MB")
        if status == "crash":
            raise DecodeError(f"{path}: decoding failed in the worker ({payload})")
        array = np.empty(payload["shape"], dtype=np.dtype(payload["dtype"]))
        if not parent.poll(max(0.0, deadline - time.monotonic())):
            raise DecodeTimeoutError(f"{path}: decoding took longer than {timeout_s:g} s; stopped")
        parent.recv_bytes_into(memoryview(array).cast("B"))
        fields = payload["fields"]
        if payload["type"] == "DicomImage":
            return DicomImage(pixels=array, **fields)
        return CTVolume(hu=array, **fields)
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


# ------------------------------------------------------------------------------------------ inspect
@dataclass
class InspectReport:
    """What :func:`inspect_path` found, as (label, value) lines."""

    path: Path
    kind: str  # "image" | "series"
    lines: list[tuple[str, str]] = field(default_factory=list)

    def render(self) -> str:
        """The report as aligned text lines."""
        width = max((len(k) for k, _ in self.lines), default=0)
        body = "\n".join(f"  {k.ljust(width)}  {v}" for k, v in self.lines)
        return f"{self.path} ({self.kind})\n{body}"


def _fmt_spacing(values: tuple[float, ...]) -> str:
    return " x ".join("n/a" if math.isnan(v) else f"{v:.4g}" for v in values) + " mm"


def inspect_path(path: str | Path, limits: DicomLimits) -> InspectReport:
    """Read a DICOM file or series folder and describe it (no identifying fields).

    Args:
        path: a file (X-ray, CT slice or multi-frame CT) or a series folder.
        limits: caps checked before decoding.

    Returns:
        An :class:`InspectReport`; ``render()`` gives text.

    Raises:
        DicomError: a subclass naming the file and the problem.
    """
    path = Path(path)
    with _typed_errors(path):
        result = _read_any(path, limits, "auto")
    if isinstance(result, DicomImage):
        m = result.meta
        report = InspectReport(path=path, kind="image")
        px = result.pixels
        report.lines += [
            ("modality", f"{result.modality} ({SUPPORTED_SOP_CLASSES.get(m.get('SOPClassUID', ''), 'SOP class n/a')})"),
            ("manufacturer", f"{m.get('Manufacturer', '?')} {m.get('ManufacturerModelName', '')}".strip()),
            ("size", f"{px.shape[0]} x {px.shape[1]} (rows x cols)"),
            (
                "pixels",
                f"{m.get('PhotometricInterpretation')}, {m.get('BitsStored')}/{m.get('BitsAllocated')} bits, "
                f"{'signed' if m.get('PixelRepresentation') == 1 else 'unsigned'}",
            ),
            ("spacing", _fmt_spacing(result.spacing) + " (row x col)"),
            ("transfer syntax", f"{m.get('TransferSyntaxName')} ({m.get('TransferSyntaxUID')})"),
        ]
        if result.modality == "CT":
            report.lines.append(("LUTs", f"rescale slope {m.get('RescaleSlope')} intercept {m.get('RescaleIntercept')} -> HU"))
            report.lines.append(("HU range", f"{px.min():.0f} .. {px.max():.0f} (mean {px.mean():.1f})"))
            if m.get("padding_pixels"):
                report.lines.append(("padding", f"{m['padding_pixels']} pixels set to {limits.padding_hu} HU"))
        else:
            voi = {"lut": "VOI LUT sequence", "window": f"window C={m.get('WindowCenter')} W={m.get('WindowWidth')}", "none": "none"}
            report.lines.append(
                ("LUTs", f"modality {'LUT/rescale' if 'RescaleSlope' in m else 'identity'}, VOI {voi[m['voi']]}"
                 f"{', MONOCHROME1 inverted' if m['inverted'] else ''}")
            )
            report.lines.append(("value range", f"{px.min():.1f} .. {px.max():.1f} after LUTs (bright = dense)"))
        return report
    m = result.meta
    hu = result.hu
    report = InspectReport(path=path, kind="series")
    report.lines += [
        ("modality", f"CT ({m.get('series_source')}, {m.get('Manufacturer', '?')})"),
        ("slices", f"{hu.shape[0]} x {hu.shape[1]} x {hu.shape[2]} (z x rows x cols)"),
        ("spacing", _fmt_spacing(result.spacing) + " (z x row x col)"),
        ("z range", f"{m['z_first_mm']:.2f} .. {m['z_last_mm']:.2f} mm along the slice normal"),
        ("orientation", f"{m['orientation']} (tilt {m['tilt_deg']:.1f} deg)"),
        ("transfer syntax", ", ".join(_ts_name(t) for t in m["transfer_syntaxes"])),
        ("HU range", f"{int(hu.min())} .. {int(hu.max())}"),
    ]
    if m.get("padding_pixels"):
        report.lines.append(("padding", f"{m['padding_pixels']} pixels set to {limits.padding_hu} HU"))
    return report
