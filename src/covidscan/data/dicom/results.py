"""What the readers return: :class:`DicomImage` (one 2D image) and :class:`CTVolume` (a CT series)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


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
