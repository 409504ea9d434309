"""Reading published (non-DICOM) images: PNG/JPEG/BMP/TIFF via OpenCV, as grey float32.

A file that cannot be used raises a typed :class:`ImageFileError` (a DataError) whose class says why,
so ingest can quarantine it with a precise reason: :class:`EmptyImageError` (0 bytes),
:class:`TruncatedImageError` (a PNG without its final IEND chunk, a JPEG without its end-of-image
marker, checked before decoding so the answer does not depend on the decoder: some libjpeg builds
decode a cut JPEG with only a warning, padding it with grey),
:class:`NotAnImageError` (the bytes are no known image format, e.g. an HTML error page saved as
``.png``), :class:`UndecodableImageError` (a known format OpenCV cannot decode) and
:class:`ImageTooLargeError`.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from covidscan.data.sources import Loaded
from covidscan.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff"}
# The end marker must lie in the file's last bytes (a few writers append a short trailer after it).
_END_MARKERS = {"png": b"IEND", "jpeg": b"\xff\xd9"}
_TAIL_BYTES = 4096
_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
                ".tif": "image/tiff", ".tiff": "image/tiff"}


class ImageFileError(DataError):
    """A published image file cannot be used; the subclass says why."""


class EmptyImageError(ImageFileError):
    """The file has zero bytes."""


class TruncatedImageError(ImageFileError):
    """A PNG or JPEG whose end marker (IEND, EOI) is missing: the file was cut short."""


class NotAnImageError(ImageFileError):
    """The bytes start with no known image signature and OpenCV cannot decode them."""


class UndecodableImageError(ImageFileError):
    """A known image format that OpenCV fails to decode (corrupt data)."""


class ImageTooLargeError(ImageFileError):
    """More pixels than the configured limit."""


def image_format(data: bytes) -> str | None:
    """``png``, ``jpeg``, ``bmp`` or ``tiff`` from the file's first bytes, ``None`` when unknown."""
    return next((fmt for sig, fmt in _SIGNATURES.items() if data.startswith(sig)), None)


def is_image_file(path: Path) -> bool:
    """True for a published image file (by suffix), hidden files excluded."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_grey(path: Path, max_pixels: int) -> np.ndarray:
    """An image file as grey float32 (rows, cols) in its own value range (0-255, or 0-65535 for 16-bit).

    Colour is converted with OpenCV's luminance weights; an alpha channel is dropped.

    Raises:
        ImageFileError: (a DataError) empty, truncated, not an image, undecodable, or more pixels
            than ``max_pixels``; the subclass says which.
    """
    raw = path.read_bytes()
    if not raw:
        raise EmptyImageError(f"{path}: empty file (0 bytes)")
    fmt = image_format(raw)
    marker = _END_MARKERS.get(fmt or "")
    if marker is not None and marker not in raw[-_TAIL_BYTES:]:
        raise TruncatedImageError(f"{path}: {fmt} file is truncated (no end marker)")
    img = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        if fmt is None:
            raise NotAnImageError(f"{path}: not an image (no PNG/JPEG/BMP/TIFF signature)")
        raise UndecodableImageError(f"{path}: {fmt} data cannot be decoded")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageTooLargeError(f"{path}: {img.shape[1]}x{img.shape[0]} pixels exceed the configured limit")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        else:
            img = img[..., 0]
    return np.ascontiguousarray(img, dtype=np.float32)


def image_loader(path: Path, max_pixels: int):
    """A loader (for :class:`~covidscan.data.sources.Record`) reading ``path`` as a published image."""

    def load() -> Loaded:
        arr = read_grey(path, max_pixels)
        meta = {"TransferSyntaxUID": _MEDIA_TYPES.get(path.suffix.lower(), ""), "PhotometricInterpretation": "MONOCHROME2"}
        return Loaded(array=arr, spacing=(math.nan, math.nan, math.nan), meta=meta)

    return load
