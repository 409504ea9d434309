"""File-level checks and the strict header parse: existence, size, signature, truncation, deflate bombs."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from covidscan.config import DicomLimits
from covidscan.data.dicom.errors import (
    EmptyFileError,
    FileTooLargeError,
    ImageTooLargeError,
    NotDicomError,
    TruncatedError,
    _fail,
    _typed_errors,
)
from covidscan.data.dicom.headers import _MB, _UNDEFINED

_DEFER = 4096  # bytes: larger values (pixel data) stay on disk until decoded
# pydicom's reading-validation mode is global; strict reads are serialised under this lock.
_READ_LOCK = threading.Lock()


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
