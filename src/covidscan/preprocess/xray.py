"""The 2D path: normalise a grey image to 0-255, resize, pseudo-colour to 3 channels (SPEC.md section 2).

An optional per-image intensity normalisation (``preprocess.intensity``: CLAHE or histogram
equalisation; ``none``, the papers' path, by default) sits between the resize and the pseudo-colour.

Used for chest X-rays (``kind="xray"``) and for CT slices published as PNG/JPEG (``kind="ct_slice2d"``).
The input is the array ingest stores: float32 (rows, cols), bright = dense. MONOCHROME1 inversion and
the Modality/VOI LUT happen once, in :mod:`covidscan.data.dicom`; they are not redone here.

Output layout: ``uint8`` of shape ``(3, size, size)``, channels first (as torch expects), channel order
**RGB**. OpenCV's colormaps produce BGR; :func:`pseudo_colour` reorders them. ``gray3`` replicates the
grey image into the three channels.
"""

from __future__ import annotations

import logging
from typing import Literal

import cv2
import numpy as np

from covidscan.config import PreprocessConfig
from covidscan.errors import ConfigError, DataError

log = logging.getLogger(__name__)

GRAY3 = "gray3"
Interpolation = Literal["auto", "area", "linear", "cubic"]

_CV2_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def colormap_names() -> list[str]:
    """Names accepted by ``preprocess.colormap``: every OpenCV colormap (lower case) plus ``gray3``."""
    names = sorted(n[len("COLORMAP_") :].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))
    return [GRAY3, *names]


def _colormap_code(name: str) -> int | None:
    """The OpenCV constant for a colormap name; None for ``gray3``. Raises ConfigError on unknown names."""
    key = name.strip().lower()
    if key == GRAY3:
        return None
    code = getattr(cv2, f"COLORMAP_{key.upper()}", None)
    if code is None:
        raise ConfigError(f"preprocess.colormap: unknown colormap {name!r}; choose one of: {', '.join(colormap_names())}")
    return int(code)


def check_grey_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate a 2D grey image and return it as float32.

    Args:
        image: the array to check (rows, cols).
        what: how to name the array in error messages (e.g. a record id).

    Raises:
        DataError: when the array is not 2D, is empty, or holds NaN/inf.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2D grey image (rows, cols), got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what}: empty image")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: image contains NaN or infinite values")
    return arr


def normalise_to_uint8(
    image: np.ndarray,
    method: Literal["minmax", "percentile"] = "minmax",
    percentiles: tuple[float, float] = (0.5, 99.5),
    what: str = "image",
) -> np.ndarray:
    """Map a grey image linearly to 0-255 and round to uint8.

    Args:
        image: 2D array, any real dtype (bright = dense).
        method: ``minmax`` maps min -> 0 and max -> 255 (the paper's "normalised to 0-255");
            ``percentile`` maps the given low/high percentiles to 0/255 and clips (robust to hot pixels
            and burned-in text).
        percentiles: (low, high) percentiles for ``percentile``.
        what: name used in error messages.

    Returns:
        uint8 array of the same shape. A constant image maps to all zeros.
    """
    arr = check_grey_image(image, what)
    if method == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
    elif method == "percentile":
        lo, hi = (float(v) for v in np.percentile(arr, percentiles))
    else:
        raise ConfigError(f"preprocess.xray_normalise: expected 'minmax' or 'percentile', got {method!r}")
    if hi <= lo:
        log.warning("%s: constant image (value %s); normalised to zeros", what, lo)
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (arr - lo) * (255.0 / (hi - lo))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def resize_2d(image: np.ndarray, size: int | tuple[int, int], interpolation: Interpolation = "auto") -> np.ndarray:
    """Resize a 2D array to ``size`` x ``size`` (or (rows, cols)); aspect ratio is not kept (as the paper).

    Args:
        image: 2D array (uint8 or float32).
        size: output side, or (rows, cols).
        interpolation: ``auto`` uses area averaging when shrinking and bilinear when enlarging.
    """
    rows, cols = (size, size) if isinstance(size, int) else size
    if image.shape == (rows, cols):
        return image.copy()
    if interpolation == "auto":
        shrinking = rows * cols < image.shape[0] * image.shape[1]
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    else:
        flag = _CV2_INTERPOLATION[interpolation]
    src = image if image.dtype in (np.uint8, np.float32) else image.astype(np.float32)
    out = cv2.resize(np.ascontiguousarray(src), (cols, rows), interpolation=flag)
    return out.astype(image.dtype, copy=False) if image.dtype == np.uint8 else out


def pseudo_colour(grey: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Pseudo-colour an 8-bit grey image: an OpenCV colormap, channels first, RGB order.

    Args:
        grey: uint8 (rows, cols).
        colormap: an OpenCV colormap name (see :func:`colormap_names`) or ``gray3``.

    Returns:
        uint8 (3, rows, cols), channel order R, G, B.
    """
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise DataError(f"pseudo_colour: expected uint8 (rows, cols), got {grey.dtype} {grey.shape}")
    code = _colormap_code(colormap)
    if code is None:
        return np.repeat(grey[None], 3, axis=0)
    bgr = cv2.applyColorMap(np.ascontiguousarray(grey), code)  # (rows, cols, 3) BGR
    return np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))


def equalise_intensity(grey: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Per-image intensity normalisation of a uint8 grey image, as ``cfg.intensity`` says.

    ``none`` returns the image unchanged (the papers' path); ``equalise`` is global histogram equalisation;
    ``clahe`` is contrast-limited adaptive histogram equalisation (``clahe_clip_limit``, a
    ``clahe_tiles`` x ``clahe_tiles`` grid). Both spread every image over the same intensity range,
    which removes the brightness and contrast that differ between sources more than between labels.
    """
    if cfg.intensity == "none":
        return grey
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise DataError(f"equalise_intensity: expected uint8 (rows, cols), got {grey.dtype} {grey.shape}")
    if cfg.intensity == "equalise":
        return cv2.equalizeHist(np.ascontiguousarray(grey))
    if cfg.intensity == "clahe":
        clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip_limit, tileGridSize=(cfg.clahe_tiles, cfg.clahe_tiles))
        return clahe.apply(np.ascontiguousarray(grey))
    raise ConfigError(f"preprocess.intensity: expected 'none', 'equalise' or 'clahe', got {cfg.intensity!r}")


def grey_2d(image: np.ndarray, cfg: PreprocessConfig, size: int | None = None, what: str = "image") -> np.ndarray:
    """Normalise, resize and (per ``cfg.intensity``) equalise a grey image: the uint8 (size, size) image
    that :func:`preprocess_2d` colours.

    Args:
        image: float32 (rows, cols) as stored by ingest.
        cfg: preprocessing parameters (``xray_normalise``, ``xray_percentiles``, ``resize_interpolation``,
            ``intensity``).
        size: output side; defaults to ``cfg.xray_size``.
        what: name used in error messages.
    """
    side = cfg.xray_size if size is None else size
    grey = normalise_to_uint8(image, cfg.xray_normalise, cfg.xray_percentiles, what=what)
    return equalise_intensity(resize_2d(grey, side, cfg.resize_interpolation), cfg)


def size_for_kind(kind: str, cfg: PreprocessConfig) -> int:
    """The output side for a 2D kind: ``xray_size`` for X-rays, ``ct_size`` for 2D CT slices."""
    if kind == "xray":
        return cfg.xray_size
    if kind == "ct_slice2d":
        return cfg.ct_size
    raise DataError(f"2D preprocessing handles kinds 'xray' and 'ct_slice2d', got {kind!r}")


def preprocess_2d(image: np.ndarray, cfg: PreprocessConfig, kind: str = "xray", what: str = "image") -> np.ndarray:
    """X-ray (or 2D CT slice) -> normalised, resized, pseudo-coloured uint8 (3, size, size), RGB.

    This is the one 2D preprocessing path; training (via :func:`covidscan.preprocess.cache.preprocess_manifest`)
    and serving both call it.

    Args:
        image: float32 (rows, cols), bright = dense (ingest's ``xray`` / ``ct_slice2d`` array).
        cfg: preprocessing parameters.
        kind: ``xray`` (side ``cfg.xray_size``) or ``ct_slice2d`` (side ``cfg.ct_size``).
        what: name used in error messages.
    """
    grey = grey_2d(image, cfg, size_for_kind(kind, cfg), what=what)
    return pseudo_colour(grey, cfg.colormap)


def preprocess_xray(image: np.ndarray, cfg: PreprocessConfig, what: str = "image") -> np.ndarray:
    """Shorthand for :func:`preprocess_2d` with ``kind="xray"``."""
    return preprocess_2d(image, cfg, kind="xray", what=what)


def preprocess_ct_slice2d(image: np.ndarray, cfg: PreprocessConfig, what: str = "image") -> np.ndarray:
    """Shorthand for :func:`preprocess_2d` with ``kind="ct_slice2d"`` (CT published as PNG/JPEG)."""
    return preprocess_2d(image, cfg, kind="ct_slice2d", what=what)


def crop_box(image: np.ndarray, box: tuple[float, float, float, float], what: str = "image") -> np.ndarray:
    """Cut a box (x0, y0, x1, y1; x = column, pixel coordinates, x1/y1 exclusive) out of a 2D image.

    The box is rounded outward to whole pixels and clipped to the image.

    Raises:
        DataError: when nothing of the box lies inside the image.
    """
    x0, y0, x1, y1 = box
    rows, cols = image.shape[:2]
    c0, r0 = max(int(np.floor(min(x0, x1))), 0), max(int(np.floor(min(y0, y1))), 0)
    c1, r1 = min(int(np.ceil(max(x0, x1))), cols), min(int(np.ceil(max(y0, y1))), rows)
    if c1 <= c0 or r1 <= r0:
        raise DataError(f"{what}: annotation box {tuple(box)} lies outside the image of {rows}x{cols} pixels")
    return image[r0:r1, c0:c1]


def lesion_crop(grey_full: np.ndarray, box: tuple[float, float, float, float], cfg: PreprocessConfig, what: str = "image") -> np.ndarray:
    """A CNNRF input: the box cut from a full-resolution 8-bit grey image, resized and pseudo-coloured.

    Args:
        grey_full: uint8 (rows, cols) at the stored array's resolution (box coordinates refer to it).
        box: (x0, y0, x1, y1) in pixels.
        cfg: ``crop_size``, ``colormap``, ``resize_interpolation``.
        what: name used in error messages.

    Returns:
        uint8 (3, crop_size, crop_size), RGB.
    """
    patch = crop_box(grey_full, box, what)
    return pseudo_colour(resize_2d(patch, cfg.crop_size, cfg.resize_interpolation), cfg.colormap)
