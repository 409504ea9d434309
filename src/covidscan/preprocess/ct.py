"""CT preprocessing: the lung window, z resampling, and the two CT inputs (SPEC.md section 2).

Input: ingest's ``ct_volume`` array, int16 Hounsfield units (z, y, x), z ordered along the slice
normal, with the slice spacing from the manifest.

* **Dimension normalisation (2D framework, Liang et al. 2020)**: window centre -600 / width 2000 (clip to
  [-1600, 400] HU) scaled to 0-255, linear resampling along z to ``ct_slices`` (300) slices, in-plane
  resize to ``ct_size``; stored as uint8 ``(ct_slices, ct_size, ct_size)``. The network's first layer,
  a trainable 1x1 conv 300 -> 3 with groups=3, turns the three groups of 100 contiguous slices
  (``stack[0:100]``, ``stack[100:200]``, ``stack[200:300]``) into the three channels.
* **Volume (3D CSAC-Net, Yao et al. 2021)**: whole volume (no lung segmentation), same window scaled to
  [0, 1], resampled to ``volume_thickness_mm`` (5 mm) along z, centre-cropped or padded (with
  ``volume_pad_hu``, air) to ``volume_slices``, resized in plane to ``volume_size``; float16
  ``(volume_slices, volume_size, volume_size)``.

* **One slice as a 2D image (the CT-slice model, ``ct_slice2d``)**: a single CT slice in HU (a one-frame
  DICOM sent to the service) becomes the grey image a published slice is, with the same lung window
  (:func:`slice_grey`); the 2D path (:func:`covidscan.preprocess.xray.preprocess_2d`) then treats it
  as a ``ct_slice2d`` record (PNG/JPEG slice) is treated.

In both volume inputs, every slice is windowed and resized in plane first, then the stack is resampled along z
(both steps are linear, so the order only changes rounding, and it keeps memory at the output size).
:func:`volume_slice_index` says where a source slice lands in the volume (e.g. an expert box's slice),
computed from the same :func:`thickness_slices` and :func:`crop_or_pad_start` the volume uses.
"""

from __future__ import annotations

import math

import numpy as np

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.preprocess.xray import resize_2d


def window_bounds(center: float, width: float) -> tuple[float, float]:
    """The HU range a window keeps: (center - width/2, center + width/2); (-1600, 400) for the paper's."""
    return center - width / 2.0, center + width / 2.0


def window_unit(hu: np.ndarray, center: float = -600.0, width: float = 2000.0) -> np.ndarray:
    """Clip HU to the window and scale linearly to float32 [0, 1] (low bound -> 0, high bound -> 1)."""
    lo, hi = window_bounds(center, width)
    out = np.asarray((np.asarray(hu, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo), dtype=np.float32)
    return np.clip(out, 0.0, 1.0, out=out) if out.ndim else np.clip(out, 0.0, 1.0)


def window_uint8(hu: np.ndarray, center: float = -600.0, width: float = 2000.0) -> np.ndarray:
    """Clip HU to the window and scale to 0-255, rounded to uint8 (-1600 -> 0, 400 -> 255, -600 -> 128)."""
    return np.rint(window_unit(hu, center, width) * np.float32(255.0)).astype(np.uint8)


def slice_grey(hu: np.ndarray, cfg: PreprocessConfig, what: str = "slice") -> np.ndarray:
    """One CT slice in HU -> the grey image of a ``ct_slice2d`` record: float32 (rows, cols) in 0-255.

    ``ct_slice2d`` records are CT published as PNG/JPEG: already-windowed renderings read as grey 0-255
    (bright = dense). A slice that arrives in Hounsfield units is rendered the same way with the CT
    path's own lung window (``ct_window_center`` / ``ct_window_width``, the window of :func:`ct_stack`),
    so that :func:`covidscan.preprocess.xray.preprocess_2d` (``kind="ct_slice2d"``) sees what it sees at
    training. Raw HU are not fed to the 2D path: its min-max normalisation would spread bone to air and
    leave the lungs nearly black, unlike any published slice.

    Args:
        hu: (rows, cols) Hounsfield units (int16 as ingest stores them, or float).
        cfg: ``ct_window_center``, ``ct_window_width``.
        what: name used in error messages.
    """
    arr = np.asarray(hu)
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{what}: expected one CT slice (rows, cols) in HU, got shape {arr.shape}")
    return window_uint8(arr, cfg.ct_window_center, cfg.ct_window_width).astype(np.float32)


def resample_slices(volume: np.ndarray, n_slices: int) -> np.ndarray:
    """Linear resampling along z (axis 0) to ``n_slices``, end slices kept.

    Output slice ``k`` sits at source position ``k * (z - 1) / (n_slices - 1)``; a one-slice input is
    repeated; a one-slice output is the middle source slice ``(z - 1) // 2``. Float inputs keep their
    dtype; integer inputs are returned as float32 (round them yourself).

    Args:
        volume: (z, ...) array.
        n_slices: number of output slices (>= 1).
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    vol = np.asarray(volume)
    if not np.issubdtype(vol.dtype, np.floating):
        vol = vol.astype(np.float32)
    z = vol.shape[0]
    if z == 0:
        raise DataError("cannot resample an empty volume (0 slices)")
    if z == 1:
        return np.repeat(vol, n_slices, axis=0)
    if n_slices == 1:
        return vol[[(z - 1) // 2]].copy()
    pos = np.linspace(0.0, z - 1, n_slices)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, z - 2)
    frac = pos - lo
    out = np.empty((n_slices, *vol.shape[1:]), dtype=vol.dtype)
    for k in range(n_slices):  # slice by slice: peak memory stays at the output size
        f = vol.dtype.type(frac[k])
        out[k] = vol[lo[k]] * (1 - f) + vol[lo[k] + 1] * f
    return out


def resample_thickness(volume: np.ndarray, spacing_z: float, target_mm: float) -> tuple[np.ndarray, float]:
    """Resample along z to (about) ``target_mm`` between slice centres, linearly, end slices kept.

    The number of output slices is :func:`thickness_slices`, ``round((z - 1) * spacing_z / target_mm) + 1``;
    they cover the same extent as the input (first and last slice centres kept), so the achieved
    spacing (returned) is within half a slice of the target.

    Args:
        volume: (z, y, x) array.
        spacing_z: distance between slice centres in mm (finite, > 0).
        target_mm: wanted distance in mm.

    Returns:
        (resampled volume, achieved spacing in mm).
    """
    if not (math.isfinite(spacing_z) and spacing_z > 0):
        raise DataError(f"slice spacing must be a positive number of mm to resample to {target_mm} mm, got {spacing_z}")
    z = volume.shape[0]
    n = thickness_slices(z, spacing_z, target_mm)
    spacing = (z - 1) * spacing_z / (n - 1) if n > 1 else float(target_mm)
    return resample_slices(volume, n), float(spacing)


def thickness_slices(n_source: int, spacing_z: float, target_mm: float) -> int:
    """How many slices :func:`resample_thickness` makes of ``n_source`` slices ``spacing_z`` mm apart."""
    if not (math.isfinite(spacing_z) and spacing_z > 0):
        raise DataError(f"slice spacing must be a positive number of mm to resample to {target_mm} mm, got {spacing_z}")
    if n_source < 2:
        return 1
    return max(int(round((n_source - 1) * spacing_z / target_mm)) + 1, 1)


def crop_or_pad_start(n_in: int, n_slices: int) -> int:
    """The input slice that becomes output slice 0 in :func:`crop_or_pad` (negative: slices padded before)."""
    return (n_in - n_slices) // 2 if n_in >= n_slices else -((n_slices - n_in) // 2)


def crop_or_pad(volume: np.ndarray, n_slices: int, pad_value: float) -> np.ndarray:
    """Centre-crop or symmetrically pad (with ``pad_value``) along z to exactly ``n_slices``."""
    z = volume.shape[0]
    if z == n_slices:
        return volume
    if z > n_slices:
        start = crop_or_pad_start(z, n_slices)
        return volume[start : start + n_slices]
    before = -crop_or_pad_start(z, n_slices)
    after = n_slices - z - before
    widths = [(before, after)] + [(0, 0)] * (volume.ndim - 1)
    return np.pad(volume, widths, mode="constant", constant_values=pad_value)


def _check_volume(hu: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(hu)
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise DataError(f"{what}: expected a CT volume (z, y, x) in HU, got shape {arr.shape}")
    return arr


def _windowed_resized(hu: np.ndarray, cfg: PreprocessConfig, size: int) -> np.ndarray:
    """Window every slice to float32 [0, 1] and resize it in plane: (z, size, size) float32."""
    out = np.empty((hu.shape[0], size, size), dtype=np.float32)
    for k in range(hu.shape[0]):
        out[k] = resize_2d(window_unit(hu[k], cfg.ct_window_center, cfg.ct_window_width), size, cfg.resize_interpolation)
    return out


def ct_stack(hu: np.ndarray, cfg: PreprocessConfig, what: str = "volume") -> np.ndarray:
    """Dimension normalisation for the 2D framework: HU (z, y, x) -> uint8 (ct_slices, ct_size, ct_size).

    Args:
        hu: int16 (or float) Hounsfield units, (z, y, x).
        cfg: ``ct_window_center``, ``ct_window_width``, ``ct_slices``, ``ct_size``, ``resize_interpolation``.
        what: name used in error messages.
    """
    hu = _check_volume(hu, what)
    unit = resample_slices(_windowed_resized(hu, cfg, cfg.ct_size), cfg.ct_slices)
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def stack_groups(stack: np.ndarray, groups: int = 3) -> list[np.ndarray]:
    """The contiguous slice groups that the 1x1 groups=3 conv turns into channels (3 x 100 by default)."""
    if stack.shape[0] % groups:
        raise DataError(f"a stack of {stack.shape[0]} slices does not split into {groups} equal groups")
    n = stack.shape[0] // groups
    return [stack[g * n : (g + 1) * n] for g in range(groups)]


def ct_volume(hu: np.ndarray, spacing_z: float, cfg: PreprocessConfig, what: str = "volume") -> np.ndarray:
    """The 3D network's input: HU (z, y, x) -> float16 (volume_slices, volume_size, volume_size) in [0, 1].

    Args:
        hu: int16 (or float) Hounsfield units, (z, y, x).
        spacing_z: distance between slice centres in mm (the manifest's ``spacing_slice``).
        cfg: window, ``volume_thickness_mm``, ``volume_slices``, ``volume_size``, ``volume_pad_hu``.
        what: name used in error messages.

    Raises:
        DataError: when the volume is not 3D or the slice spacing is unknown.
    """
    hu = _check_volume(hu, what)
    if not (math.isfinite(spacing_z) and spacing_z > 0):
        raise DataError(f"{what}: slice spacing is unknown ({spacing_z}); cannot resample to {cfg.volume_thickness_mm} mm")
    unit = _windowed_resized(hu, cfg, cfg.volume_size)
    unit, _ = resample_thickness(unit, spacing_z, cfg.volume_thickness_mm)
    pad = float(window_unit(np.float32(cfg.volume_pad_hu), cfg.ct_window_center, cfg.ct_window_width))
    unit = crop_or_pad(unit, cfg.volume_slices, pad)
    return np.clip(unit, 0.0, 1.0).astype(np.float16)


def volume_slice_index(slice_index: np.ndarray | float, n_source: int, spacing_z: float, cfg: PreprocessConfig) -> np.ndarray:
    """Where source slices land in :func:`ct_volume`'s output: fractional output slice indices.

    The inverse of what :func:`ct_volume` does along z: :func:`resample_thickness` puts output slice
    ``k`` at source position ``k * (z - 1) / (n - 1)`` (``n`` = :func:`thickness_slices`), so source
    slice ``s`` sits at ``s * (n - 1) / (z - 1)``; :func:`crop_or_pad` then shifts it by
    :func:`crop_or_pad_start`. A one-slice input, or a resampling to one slice, puts every source
    slice on that one slice. Results outside ``[0, volume_slices)`` were cropped away.

    Args:
        slice_index: source slice index (or indices, may be fractional), 0 = the first slice along z.
        n_source: number of slices of the source volume (the manifest's ``n_slices``).
        spacing_z: distance between source slice centres in mm (the manifest's ``spacing_slice``).
        cfg: ``volume_thickness_mm``, ``volume_slices``.

    Raises:
        DataError: when the slice spacing is unknown or ``n_source`` < 1.
    """
    if n_source < 1:
        raise DataError(f"a volume of {n_source} slices has no slice to map")
    s = np.asarray(slice_index, dtype=float)
    n = thickness_slices(n_source, spacing_z, cfg.volume_thickness_mm)
    k = s * (n - 1) / (n_source - 1) if n > 1 else np.zeros_like(s)
    return k - crop_or_pad_start(n, cfg.volume_slices)


def ct_slice_grey(hu_slice: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One HU slice at full resolution, windowed to uint8 (the image lesion crops are cut from)."""
    return window_uint8(hu_slice, cfg.ct_window_center, cfg.ct_window_width)
