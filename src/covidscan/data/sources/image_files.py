"""Reading published (non-DICOM) images: PNG/JPEG/BMP/TIFF via OpenCV, as grey float32."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from covidscan.data.sources import Loaded
from covidscan.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
                ".tif": "image/tiff", ".tiff": "image/tiff"}


def is_image_file(path: Path) -> bool:
    """True for a published image file (by suffix), hidden files excluded."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_grey(path: Path, max_pixels: int) -> np.ndarray:
    """An image file as grey float32 (rows, cols) in its own value range (0-255, or 0-65535 for 16-bit).

    Colour is converted with OpenCV's luminance weights; an alpha channel is dropped.

    Raises:
        DataError: unreadable, or more pixels than ``max_pixels``.
    """
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"{path}: not a readable image")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise DataError(f"{path}: {img.shape[1]}x{img.shape[0]} pixels exceed the configured limit")
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
