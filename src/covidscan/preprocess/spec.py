"""What a model is fed: the input spec of each preprocessed kind, and the array -> tensor step.

A model object carries its :class:`InputSpec` (torchxrayvision style) so training, evaluation and the
service agree on shape, dtype, colormap and scaling. ``preprocess_manifest`` writes every spec to
``input_specs.json`` next to the arrays.

Kinds (the ``input_kind`` column of the preprocessed index):

============== ===================================== ======= ================================
input_kind     shape per sample (channels first)     dtype   values
============== ===================================== ======= ================================
xray           (3, xray_size, xray_size)  RGB        uint8   0-255, pseudo-coloured
ct_slice2d     (3, ct_size, ct_size)      RGB        uint8   0-255, pseudo-coloured
ct_stack       (ct_slices, ct_size, ct_size)         uint8   0-255, lung window; 3 x 100 groups
ct_volume      (1, volume_slices, volume_size, ...)  float16 0-1, lung window (1 channel added)
lesion_crop    (3, crop_size, crop_size)  RGB        uint8   0-255, pseudo-coloured
============== ===================================== ======= ================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError

if TYPE_CHECKING:
    import torch

INPUT_KINDS = ("xray", "ct_slice2d", "ct_stack", "ct_volume", "lesion_crop")


@dataclass(frozen=True)
class InputSpec:
    """Shape, dtype and meaning of one preprocessed input kind.

    Attributes:
        kind: one of :data:`INPUT_KINDS`.
        shape: per-sample shape as the model sees it (channels first).
        stored_shape: per-sample shape of the ``.npy`` on disk.
        dtype: dtype on disk.
        value_range: range on disk.
        colormap: the pseudo-colour map for RGB kinds, else None.
        channel_groups: for ``ct_stack``, the number of contiguous slice groups (3); else None.
        params: the preprocessing parameters that produced it.
    """

    kind: str
    shape: tuple[int, ...]
    stored_shape: tuple[int, ...]
    dtype: str
    value_range: tuple[float, float]
    colormap: str | None = None
    channel_groups: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    def check(self, array: np.ndarray, what: str = "array") -> None:
        """Raise DataError when a stored array does not match this spec (shape and dtype)."""
        if tuple(array.shape) != self.stored_shape or str(array.dtype) != self.dtype:
            raise DataError(f"{what}: expected {self.kind} {self.dtype} {self.stored_shape}, got {array.dtype} {tuple(array.shape)}")

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        """Stored array (one sample, or a batch with a leading dim) -> float32 tensor in [0, 1].

        uint8 kinds are divided by 255; ``ct_volume`` gains its channel axis.
        """
        import torch

        arr = np.asarray(array)
        sample_dims = len(self.stored_shape)
        if arr.ndim not in (sample_dims, sample_dims + 1):
            raise DataError(f"{self.kind}: expected {sample_dims} or {sample_dims + 1} dims, got shape {arr.shape}")
        t = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
        if self.dtype == "uint8":
            t = t / 255.0
        if len(self.shape) == sample_dims + 1:  # add the channel axis
            t = t.unsqueeze(-sample_dims - 1)
        return t


def input_spec(kind: str, cfg: PreprocessConfig) -> InputSpec:
    """The :class:`InputSpec` for a kind under the given preprocessing parameters."""
    window = {"ct_window_center": cfg.ct_window_center, "ct_window_width": cfg.ct_window_width}
    norm = {"xray_normalise": cfg.xray_normalise, "xray_percentiles": list(cfg.xray_percentiles)}
    interp = {"resize_interpolation": cfg.resize_interpolation}
    # named only when on, so that the papers' path keeps its parameters (and cache keys) unchanged
    if cfg.intensity == "none":
        image_norm = norm
    else:
        clahe = {"clahe_clip_limit": cfg.clahe_clip_limit, "clahe_tiles": cfg.clahe_tiles} if cfg.intensity == "clahe" else {}
        image_norm = {**norm, "intensity": cfg.intensity, **clahe}
    if kind == "xray":
        s = (3, cfg.xray_size, cfg.xray_size)
        return InputSpec(kind, s, s, "uint8", (0, 255), cfg.colormap, None, {"xray_size": cfg.xray_size, "colormap": cfg.colormap, **image_norm, **interp})
    if kind == "ct_slice2d":
        s = (3, cfg.ct_size, cfg.ct_size)
        return InputSpec(kind, s, s, "uint8", (0, 255), cfg.colormap, None, {"ct_size": cfg.ct_size, "colormap": cfg.colormap, **image_norm, **interp})
    if kind == "ct_stack":
        s = (cfg.ct_slices, cfg.ct_size, cfg.ct_size)
        return InputSpec(kind, s, s, "uint8", (0, 255), None, 3, {"ct_slices": cfg.ct_slices, "ct_size": cfg.ct_size, **window, **interp})
    if kind == "ct_volume":
        s = (cfg.volume_slices, cfg.volume_size, cfg.volume_size)
        params = {
            "volume_thickness_mm": cfg.volume_thickness_mm,
            "volume_slices": cfg.volume_slices,
            "volume_size": cfg.volume_size,
            "volume_pad_hu": cfg.volume_pad_hu,
            **window,
            **interp,
        }
        return InputSpec(kind, (1, *s), s, "float16", (0.0, 1.0), None, None, params)
    if kind == "lesion_crop":
        s = (3, cfg.crop_size, cfg.crop_size)
        return InputSpec(kind, s, s, "uint8", (0, 255), cfg.colormap, None, {"crop_size": cfg.crop_size, "colormap": cfg.colormap, **window, **norm, **interp})
    raise DataError(f"unknown input kind {kind!r}; expected one of {', '.join(INPUT_KINDS)}")


def model_inputs(array: np.ndarray, kind: str, cfg: PreprocessConfig, spacing_slice: float = float("nan"), what: str = "image") -> dict[str, np.ndarray]:
    """Every model input one ingest array yields, uncached: the entry point for serving.

    Args:
        array: ingest's array: float32 (rows, cols) for ``xray`` / ``ct_slice2d``; int16 HU (z, y, x)
            for ``ct_volume``.
        kind: the manifest kind (``xray``, ``ct_slice2d`` or ``ct_volume``).
        cfg: the preprocessing parameters the model was trained with.
        spacing_slice: slice spacing in mm (needed for ``ct_volume``'s 3D input).
        what: name used in error messages.

    Returns:
        input_kind -> stored-layout array: ``{"xray": ...}``, ``{"ct_slice2d": ...}``, or
        ``{"ct_stack": ..., "ct_volume": ...}`` (the volume only when the spacing is known).
        Turn one into a model tensor with ``input_spec(input_kind, cfg).to_tensor(arr)``.
    """
    from covidscan.preprocess import ct as ct_mod
    from covidscan.preprocess import xray as xray_mod

    if kind in ("xray", "ct_slice2d"):
        return {kind: xray_mod.preprocess_2d(array, cfg, kind=kind, what=what)}
    if kind == "ct_volume":
        out = {"ct_stack": ct_mod.ct_stack(array, cfg, what=what)}
        if np.isfinite(spacing_slice) and spacing_slice > 0:
            out["ct_volume"] = ct_mod.ct_volume(array, spacing_slice, cfg, what=what)
        return out
    raise DataError(f"{what}: unknown kind {kind!r}; expected xray, ct_slice2d or ct_volume")


def aligned_preprocess(card: dict[str, Any], pre: PreprocessConfig) -> PreprocessConfig:
    """The preprocessing parameters with the input sizes the model was built for (its card wins)."""
    spec = card["input_spec"]
    size = list(spec["size"])
    kind = spec["kind"]
    update: dict[str, Any] = {}
    if kind in ("image2d", "ct_slice2d"):
        update = {"xray_size": int(size[-1]), "ct_size": int(size[-1])}
    elif kind == "ct_stack":
        update = {"ct_slices": int(spec["channels"]), "ct_size": int(size[-1])}
    elif kind == "ct_volume":
        update = {"volume_slices": int(size[0]), "volume_size": int(size[-1])}
    elif kind == "lesion_crop":
        update = {"crop_size": int(size[-1])}
    return pre.model_copy(update=update)
