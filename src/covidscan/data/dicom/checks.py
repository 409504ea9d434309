"""Image-level checks made from the header before any pixel is decoded (SOP class, modality,
photometric, sizes, transfer syntax, Pixel Data length, each codestream's declared size)."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from covidscan.config import DicomLimits
from covidscan.data.dicom.errors import (
    ColourImageError,
    DecodeError,
    HeaderValueError,
    ImageTooLargeError,
    MissingPixelDataError,
    MissingRescaleError,
    PixelFormatError,
    ShortPixelDataError,
    UnsupportedSOPClassError,
    UnsupportedTransferSyntaxError,
    WrongModalityError,
    _fail,
)
from covidscan.data.dicom.headers import _MB, _UNDEFINED, SUPPORTED_SOP_CLASSES, _number, _ts_name
from covidscan.errors import DicomError

log = logging.getLogger(__name__)

_COLOUR = ("RGB", "YBR", "PALETTE", "HSV", "ARGB", "CMYK")


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
