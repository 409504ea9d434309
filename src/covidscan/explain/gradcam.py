"""Grad-CAM heatmaps for 2D and 3D models (MONAI's ``monai.visualize.GradCAM``) and PNG overlays.

The CAM is computed at a named layer (``dict(model.named_modules())`` key; 2D CNNCF: its last stage,
3D CSAC-Net: e.g. its last 3D max-pool), upsampled (bi/trilinearly) to the input size and normalised
per image to [0, 1] with the maximum at 1. MONAI's default post-processing maps (min, max) to (1, 0)
(it *flips* the map), so it is replaced here by a min-max scaling that keeps high = salient. A map
that is constant (e.g. all zero after the ReLU) is returned as zeros.

Each image is explained on its own (batch of one), so ``class_idx=None`` means "each image's own
predicted class". A model with one output logit (binary) uses ``class_idx=0``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt  # colormaps and imsave only: no figure, no backend needed
import numpy as np
import torch
from monai.visualize import GradCAM

from covidscan.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from covidscan.config import EvaluateConfig, PreprocessConfig

log = logging.getLogger(__name__)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max scaling to [0, 1] (max -> 1); constant maps become 0."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    span = hi - lo
    scaled = torch.where(
        span > 0,
        (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
        torch.zeros_like(flat),
    )
    return scaled.reshape(x.shape)


def grad_cam(
    model: torch.nn.Module,
    images: torch.Tensor | np.ndarray,
    target_layer: str,
    spatial_dims: int = 2,
    class_idx: int | None = None,
) -> np.ndarray:
    """Grad-CAM heatmap(s) at input resolution, normalised to [0, 1].

    Args:
        model: the network; its output is logits of shape (B, n_classes). It is put in eval mode for
            the computation and returned to its previous mode.
        images: one image (C, *spatial) or a batch (B, C, *spatial); spatial is (H, W) or (D, H, W).
        target_layer: name of the layer whose activations and gradients are used.
        spatial_dims: 2 or 3.
        class_idx: class to explain; None explains each image's predicted (argmax) class.

    Returns:
        float32 array (*spatial) for one image or (B, *spatial) for a batch.

    Raises:
        DataError: wrong input rank or unknown layer name.
    """
    if spatial_dims not in (2, 3):
        raise DataError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images).float()
    single = x.ndim == spatial_dims + 1
    if single:
        x = x[None]
    if x.ndim != spatial_dims + 2:
        raise DataError(
            f"expected (C, *spatial) or (B, C, *spatial) with {spatial_dims} spatial dims, got {tuple(x.shape)}"
        )
    names = dict(model.named_modules())
    if target_layer not in names:
        raise DataError(f"Grad-CAM target layer {target_layer!r} not found in the model")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    cam = GradCAM(nn_module=model, target_layers=target_layer, postprocessing=_minmax)
    maps = []
    with torch.enable_grad():
        for i in range(x.shape[0]):
            # an input that requires grad makes the full backward hook fire on the layer's own
            # gradients (otherwise torch warns and fires it on the outputs only)
            xi = x[i : i + 1].to(device).clone().requires_grad_(True)
            out = cam(x=xi, class_idx=class_idx)
            maps.append(out.detach().cpu().numpy()[0, 0])
    result = np.stack(maps).astype(np.float32)
    return result[0] if single else result


def _to_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=float)
    if img.ndim == 2:
        lo, hi = float(img.min()), float(img.max())
        grey = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.ndim == 3 and img.shape[-1] == 3:  # pseudo-colour image, uint8 or [0, 1]
        return img / 255.0 if img.max() > 1.0 else img
    raise DataError(f"overlay image must be (H, W) grey or (H, W, 3) colour, got {img.shape}")


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a heatmap onto a grey or pseudo-colour image.

    Each pixel is ``image * (1 - alpha h) + colour(h) * alpha h``, so cold regions keep the image.

    Args:
        image: (H, W) grey (any range, min-max scaled) or (H, W, 3) colour (uint8 or [0, 1]).
        heatmap: (H, W) in [0, 1].
        alpha: maximal opacity of the heatmap.
        colormap: matplotlib colormap name.

    Returns:
        uint8 RGB array (H, W, 3).
    """
    rgb = _to_rgb(image)
    h = np.clip(np.asarray(heatmap, dtype=float), 0.0, 1.0)
    if h.shape != rgb.shape[:2]:
        raise DataError(f"heatmap {h.shape} and image {rgb.shape[:2]} differ in size")
    colour = plt.get_cmap(colormap)(h)[..., :3]
    a = alpha * h[..., None]
    return np.clip(np.round((rgb * (1 - a) + colour * a) * 255), 0, 255).astype(np.uint8)


def peak_slice(heatmap: np.ndarray) -> int:
    """Index (axis 0) of the slice with the largest heatmap mass of a 3D heatmap.

    Args:
        heatmap: (D, H, W).

    Returns:
        The slice index.
    """
    h = np.asarray(heatmap, dtype=float)
    return int(h.reshape(h.shape[0], -1).sum(1).argmax())


def save_overlay_png(
    image: np.ndarray,
    heatmap: np.ndarray,
    path: Path | str,
    alpha: float = 0.5,
    colormap: str = "jet",
    slice_index: int | None = None,
) -> Path:
    """Write the overlay as a pixel-exact PNG; for a 3D pair, one slice (default: the peak slice).

    Args:
        image: (H, W), (H, W, 3) or a volume (D, H, W).
        heatmap: (H, W) or (D, H, W) in [0, 1].
        path: PNG to write.
        alpha: maximal heatmap opacity.
        colormap: matplotlib colormap name.
        slice_index: slice of a volume to draw (default :func:`peak_slice`).

    Returns:
        The written path.
    """
    h = np.asarray(heatmap)
    img = np.asarray(image)
    if h.ndim == 3:
        k = peak_slice(h) if slice_index is None else int(slice_index)
        h, img = h[k], img[k]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, overlay(img, h, alpha=alpha, colormap=colormap))
    return path


@dataclass(frozen=True)
class CaseCams:
    """Grad-CAM of a test set: the overlays (caption -> PNG) and the DBSCAN-centre agreement with the experts.

    ``agreement`` is ``{"n_cases": ...}`` plus :func:`covidscan.explain.centres.agreement_over_cases`'s
    indices when some case had adjudicated boxes (the metrics JSON's ``centres``); both are empty for a
    model without a ``target_layer``.
    """

    figures: dict[str, Path]
    agreement: dict[str, Any]


def grad_cam_cases(model, records: pd.DataFrame, annotations: pd.DataFrame, processed_dir: Path, cfg: EvaluateConfig,
                   pre: PreprocessConfig, out_dir: Path, max_cases: int | None) -> CaseCams:  # fmt: skip
    """Grad-CAM overlays of (a sample of) the test cases and the DBSCAN-centre agreement with the experts.

    Args:
        model: a model from :func:`covidscan.models.zoo.load_model` (its ``target_layer`` is explained).
        records: the scored test records (``score`` column), in order; the first ``max_cases`` are drawn.
        annotations: ``annotations.parquet`` (its ``reader == "adjudicated"`` boxes are the reference); may be empty.
        processed_dir: the preprocessed arrays.
        cfg: ``cam_threshold``, ``dbscan_eps``, ``dbscan_min_samples``.
        pre: the preprocessing parameters (input specs, volume slices).
        out_dir: overlays go to ``<out_dir>/figures/gradcam/<record_id>.png``.
        max_cases: at most this many overlays (None: every record).
    """
    from covidscan.evaluation.experiment import load_input
    from covidscan.explain.centres import agreement_over_cases, expert_centres, heatmap_centres

    kind = model.card.input_spec.kind
    dims = 3 if kind == "ct_volume" else 2
    layer = getattr(model, "target_layer", None)
    if layer is None:
        return CaseCams({}, {})
    adjudicated = annotations[annotations["reader"] == "adjudicated"] if not annotations.empty else annotations
    chosen = records if max_cases is None else records.head(max_cases)
    figures: dict[str, Path] = {}
    cases = []
    for _, row in chosen.iterrows():
        x = load_input(row, kind, processed_dir, pre)[0]
        heat = grad_cam(model, x, layer, spatial_dims=dims)
        if dims == 3:
            background = x[0].numpy()
        else:
            background = np.load(processed_dir / row["grey_path"]) if row["grey_path"] else x.numpy().mean(0)
        path = save_overlay_png(background, heat, out_dir / "figures" / "gradcam" / f"{row['record_id']}.png")
        figures[f"Grad-CAM {row['record_id']} ({row['label']}, score {row['score']:.3f})"] = path
        boxes = adjudicated[adjudicated["record_id"] == row["record_id"]] if not adjudicated.empty else adjudicated
        if len(boxes):
            pred = heatmap_centres(heat, cfg.cam_threshold, cfg.dbscan_eps, cfg.dbscan_min_samples)
            cases.append((pred, expert_centres(row, boxes, dims, pre)))
    agreement: dict[str, Any] = {"n_cases": len(cases)}
    if cases:
        try:
            agreement.update(agreement_over_cases(cases))
        except DataError as err:
            log.warning("centre agreement not computed: %s", err)
    return CaseCams(figures, agreement)
