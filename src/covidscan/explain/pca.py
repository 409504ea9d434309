"""PCA of each (modality, class) sub-dataset: mean image and top eigen-images (Liang et al. 2020, Fig. 2a).

Input images are the preprocessed **grey** images (before pseudo-colouring), on the 0-255 scale:

* X-ray and 2D CT slices: the ``grey_path`` array that ``preprocess_manifest`` stores;
* CT volumes: one image per dimension-normalised stack (``image_path``, (S, H, W) uint8), either its
  middle slice (``ct_reduce="middle"``, default: one anatomical level, sharp) or its mean over slices
  (``ct_reduce="mean"``: a projection of the whole stack, blurrier but uses every slice).

Images are resized to ``size`` x ``size`` (area averaging) and flattened; sklearn's PCA (randomized
SVD, seeded) gives the mean image and orthonormal components, reshaped back into eigen-images. Signs
are sklearn's deterministic ``svd_flip`` convention (an eigen-image and its negative are equivalent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from covidscan.errors import DataError

log = logging.getLogger(__name__)

CtReduce = Literal["middle", "mean"]


@dataclass(frozen=True)
class EigenImages:
    """The PCA of one sub-dataset.

    Attributes:
        mean: float32 (H, W), the mean image (0-255 scale).
        components: float32 (k, H, W); flattened, the rows are orthonormal.
        explained_variance_ratio: float (k,).
        n_images: how many images went in.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    n_images: int


def eigen_images(images: np.ndarray, n_components: int = 5, seed: int = 0) -> EigenImages:
    """PCA of a set of same-size grey images.

    Args:
        images: (N, H, W), any real dtype; N >= 2.
        n_components: eigen-images wanted; at most N - 1 are returned (the rank of N centred images).
        seed: random state of the randomized SVD.

    Raises:
        DataError: fewer than two images, or not (N, H, W).
    """
    from sklearn.decomposition import PCA

    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 3:
        raise DataError(f"PCA expects images as (N, H, W), got shape {imgs.shape}")
    n, h, w = imgs.shape
    if n < 2:
        raise DataError(f"PCA needs at least 2 images, got {n}")
    k = max(1, min(n_components, n - 1, h * w))
    solver = "full" if n * h * w <= 4_000_000 else "randomized"
    pca = PCA(n_components=k, svd_solver=solver, random_state=seed)
    pca.fit(imgs.reshape(n, h * w))
    return EigenImages(
        mean=pca.mean_.reshape(h, w).astype(np.float32),
        components=pca.components_.reshape(k, h, w).astype(np.float32),
        explained_variance_ratio=np.asarray(pca.explained_variance_ratio_, dtype=np.float64),
        n_images=n,
    )


def _to_size(img: np.ndarray, size: int) -> np.ndarray:
    from covidscan.preprocess.xray import resize_2d

    return resize_2d(np.asarray(img, dtype=np.float32), size, "area" if max(img.shape) > size else "linear")


def grey_image(row: pd.Series | dict, processed_dir: str | Path, size: int, ct_reduce: CtReduce = "middle") -> np.ndarray:
    """One record's grey image for PCA, float32 (size, size) on the 0-255 scale (see the module docstring)."""
    processed_dir = Path(processed_dir)
    if row["input_kind"] == "ct_stack":
        stack = np.load(processed_dir / row["image_path"], mmap_mode="r")
        img = np.asarray(stack[stack.shape[0] // 2]) if ct_reduce == "middle" else np.asarray(stack, dtype=np.float32).mean(axis=0)
    elif row.get("grey_path"):
        img = np.load(processed_dir / row["grey_path"], mmap_mode="r")
    else:
        raise DataError(f"record {row['record_id']}: no grey image in the preprocessed index (grey_path is empty)")
    return _to_size(img, size)


def pca_by_class(
    index: pd.DataFrame,
    processed_dir: str | Path,
    modality: str,
    *,
    classes: Sequence[str] | None = None,
    size: int = 64,
    ct_reduce: CtReduce = "middle",
    n_components: int = 5,
    max_images: int | None = 500,
    seed: int = 0,
) -> dict[str, EigenImages]:
    """Mean and eigen-images per class for one modality, from the preprocessed index.

    Args:
        index: ``preprocess_manifest``'s index (record_id, modality, label, input_kind, image_path, grey_path).
        processed_dir: the folder the index's paths are relative to.
        modality: ``xray`` or ``ct``.
        classes: which labels, in row order; default: those present, in the canonical class order.
        size: side the images are resized to before PCA (paper figures: full size; assumed 64 here
            to keep memory at N x size^2 floats).
        ct_reduce: ``middle`` slice or slice ``mean`` of each CT stack.
        n_components: eigen-images per class (paper: 5).
        max_images: at most this many images per class, sampled with ``seed``; None: all.
        seed: sampling and SVD seed.

    Returns:
        label -> EigenImages; classes with fewer than two images are left out (with a warning).
    """
    from covidscan.config import CLASSES

    sub = index[index["modality"] == modality]
    present = set(sub["label"])
    order = list(classes) if classes is not None else [c for c in CLASSES if c in present] + sorted(present - set(CLASSES))
    rng = np.random.default_rng(seed)
    out: dict[str, EigenImages] = {}
    for label in order:
        rows = sub[sub["label"] == label].sort_values("record_id")
        if max_images is not None and len(rows) > max_images:
            rows = rows.iloc[np.sort(rng.choice(len(rows), max_images, replace=False))]
        if len(rows) < 2:
            log.warning("PCA %s/%s: %d image(s), need at least 2; left out", modality, label, len(rows))
            continue
        imgs = np.stack([grey_image(r, processed_dir, size, ct_reduce) for r in rows.to_dict("records")])
        out[label] = eigen_images(imgs, n_components, seed)
    return out


def pca_figures(
    index: pd.DataFrame,
    processed_dir: str | Path,
    out_dir: str | Path,
    *,
    size: int = 64,
    ct_reduce: CtReduce = "middle",
    n_components: int = 5,
    max_images: int | None = 500,
    seed: int = 0,
) -> list[Path]:
    """One PCA figure per modality present in the index: ``<out_dir>/pca_<modality>.png``."""
    from covidscan.visualize import plot_eigen_images

    written = []
    for modality in sorted(set(index["modality"])):
        results = pca_by_class(index, processed_dir, modality, size=size, ct_reduce=ct_reduce, n_components=n_components, max_images=max_images, seed=seed)
        if not results:
            log.warning("PCA %s: no class with two or more images; no figure", modality)
            continue
        what = "X-ray" if modality == "xray" else f"CT ({ct_reduce} slice)" if ct_reduce == "middle" else "CT (slice mean)"
        written.append(plot_eigen_images(results, Path(out_dir) / f"pca_{modality}.png", f"PCA per class: {what}", n_components))
    return written
