"""Centres of salient regions (DBSCAN on a thresholded heatmap) and their agreement with the experts.

Liang et al. 2020: DBSCAN gives the "center pixel coordinates" of the salient features, normalised to 0-1, which
are compared with the experts' annotation centres by MSE, MAE, RMSE, r and R^2 (paper: 0.0108, 0.0722,
0.1040, 0.9761, 0.8801).

Coordinate convention (both heatmap and box centres):

- 2D: ``(x, y)`` with ``x = col / width`` and ``y = row / height`` (pixel indices, so 0 <= x, y < 1);
- 3D: ``(z, y, x)`` with ``z = slice / depth``, ``y = row / height``, ``x = col / width``.

A cluster's centre is the heatmap-weighted mean of its pixel coordinates (``weighted=True``) or their
plain mean. Clusters are returned largest first; DBSCAN noise points are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import DBSCAN

from covidscan.errors import DataError
from covidscan.evaluation.regression import regression_indices

if TYPE_CHECKING:
    import pandas as pd

    from covidscan.config import PreprocessConfig


def heatmap_centres(
    heatmap: np.ndarray,
    threshold: float = 0.5,
    eps: float = 1.5,
    min_samples: int = 4,
    max_centres: int | None = None,
    weighted: bool = True,
) -> np.ndarray:
    """Normalised centres of the clusters of heatmap pixels at or above ``threshold``.

    Args:
        heatmap: 2D (rows, cols) or 3D (slices, rows, cols) map, values in [0, 1].
        threshold: level kept (``EvaluateConfig.cam_threshold``).
        eps: DBSCAN neighbourhood radius in pixels (``EvaluateConfig.dbscan_eps``).
        min_samples: DBSCAN core-point count (``EvaluateConfig.dbscan_min_samples``).
        max_centres: keep at most this many (largest) clusters.
        weighted: weight pixel coordinates by the heatmap value.

    Returns:
        Array (k, 2) of (x, y) for 2D or (k, 3) of (z, y, x) for 3D; k = 0 when nothing is found.
    """
    h = np.asarray(heatmap, dtype=float)
    if h.ndim not in (2, 3):
        raise DataError(f"heatmap must be 2D or 3D, got shape {h.shape}")
    dim = h.ndim
    coords = np.argwhere(h >= threshold)  # (m, ndim) in array order (z,) row, col
    if coords.shape[0] == 0:
        return np.zeros((0, dim))
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit(coords).labels_
    shape = np.asarray(h.shape, dtype=float)
    found: list[tuple[int, np.ndarray]] = []
    for lab in np.unique(labels[labels >= 0]):
        pts = coords[labels == lab]
        w = h[tuple(pts.T)] if weighted else np.ones(len(pts))
        centre = (pts * w[:, None]).sum(0) / w.sum() / shape  # array order, normalised
        found.append((len(pts), centre))
    found.sort(key=lambda item: -item[0])
    if max_centres is not None:
        found = found[:max_centres]
    if not found:
        return np.zeros((0, dim))
    centres = np.stack([c for _, c in found])
    return centres[:, ::-1] if dim == 2 else centres  # 2D: (row, col) -> (x, y)


def box_centres(
    boxes: np.ndarray | Sequence[Sequence[float]], shape: tuple[int, int]
) -> np.ndarray:
    """Normalised (x, y) centres of 2D boxes ``(x0, y0, x1, y1)`` (pixels, x = column).

    Args:
        boxes: array (k, 4).
        shape: (rows, cols) of the image the boxes live in.

    Returns:
        Array (k, 2) of (x, y).
    """
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    rows, cols = shape
    return np.stack([(b[:, 0] + b[:, 2]) / 2 / cols, (b[:, 1] + b[:, 3]) / 2 / rows], axis=1)


def box_centres_3d(
    boxes: np.ndarray | Sequence[Sequence[float]],
    slice_indices: np.ndarray | Sequence[int],
    shape: tuple[int, int, int],
) -> np.ndarray:
    """Normalised (z, y, x) centres of per-slice 2D boxes (``annotations.parquet`` rows of a volume).

    Args:
        boxes: array (k, 4) of ``(x0, y0, x1, y1)``.
        slice_indices: the slice of each box, length k.
        shape: (slices, rows, cols) of the volume.

    Returns:
        Array (k, 3) of (z, y, x).
    """
    depth, rows, cols = shape
    xy = box_centres(boxes, (rows, cols))
    z = np.asarray(slice_indices, dtype=float).reshape(-1) / depth
    return np.stack([z, xy[:, 1], xy[:, 0]], axis=1)


def expert_centres(row: pd.Series | Mapping[str, Any], boxes: pd.DataFrame, dims: int, pre: PreprocessConfig) -> np.ndarray:
    """Adjudicated box centres normalised to the model input: (x, y) for 2D, (z, y, x) for a volume.

    Args:
        row: the record (``rows``, ``cols``; for a volume ``n_slices`` and ``spacing_slice``).
        boxes: its ``annotations.parquet`` rows (``x0``, ``y0``, ``x1``, ``y1``, ``slice_index``).
        dims: 2 for an image input, 3 for a volume.
        pre: the preprocessing parameters (``volume_slices``).

    A box's slice goes through :func:`covidscan.preprocess.ct.volume_slice_index`, the z mapping of the
    volume preprocessing itself (5 mm resampling, then crop/pad to ``volume_slices``).
    """
    b = boxes[["x0", "y0", "x1", "y1"]].to_numpy(float)
    xy = box_centres(b, (int(row["rows"]), int(row["cols"])))  # resizing keeps normalised centres
    if dims == 2:
        return xy
    from covidscan.preprocess.ct import volume_slice_index

    z = volume_slice_index(boxes["slice_index"].to_numpy(float), int(row["n_slices"]), float(row["spacing_slice"]), pre)
    return np.stack([z / pre.volume_slices, xy[:, 1], xy[:, 0]], axis=1)


def match_centres(
    predicted: np.ndarray, expert: np.ndarray, method: str = "hungarian"
) -> tuple[np.ndarray, np.ndarray]:
    """Pair predicted centres with expert centres.

    Args:
        predicted: array (p, d).
        expert: array (e, d), same d.
        method: ``"hungarian"`` (one-to-one, minimal total Euclidean distance; min(p, e) pairs) or
            ``"nearest"`` (every expert centre with its nearest predicted centre; e pairs, a predicted
            centre may be reused).

    Returns:
        (pred_index, expert_index) integer arrays of equal length (empty when either side is empty).
    """
    p = np.asarray(predicted, dtype=float)
    e = np.asarray(expert, dtype=float)
    if p.size == 0 or e.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    if p.shape[1] != e.shape[1]:
        raise DataError(f"centres differ in dimension: {p.shape[1]} vs {e.shape[1]}")
    dist = np.linalg.norm(p[:, None, :] - e[None, :, :], axis=-1)
    if method == "hungarian":
        rows, cols = linear_sum_assignment(dist)
        return rows.astype(int), cols.astype(int)
    if method == "nearest":
        return dist.argmin(0).astype(int), np.arange(e.shape[0])
    raise ValueError(f"unknown matching {method!r}; expected 'hungarian' or 'nearest'")


def centre_agreement(predicted: np.ndarray, expert: np.ndarray) -> dict[str, float]:
    """MSE, MAE, RMSE, r and R^2 of matched centre coordinates (all coordinates pooled).

    Args:
        predicted: matched predicted centres, array (m, d).
        expert: the expert centres they were matched to, array (m, d) (the reference for R^2).

    Returns:
        :func:`covidscan.evaluation.regression.regression_indices` of the pooled coordinates.
    """
    return regression_indices(np.asarray(expert, float), np.asarray(predicted, float))


def agreement_over_cases(
    cases: Sequence[tuple[np.ndarray, np.ndarray]], method: str = "hungarian"
) -> dict[str, float]:
    """Match centres within each case, pool the matched pairs of all cases, and score them.

    Args:
        cases: one (predicted centres, expert centres) pair per image/volume.
        method: matching method (see :func:`match_centres`).

    Returns:
        The indices plus ``"n_matched"`` (pairs) and ``"n_unmatched_expert"`` (expert centres left
        without a partner, e.g. a heatmap with no cluster).
    """
    preds, experts, unmatched = [], [], 0
    for pred, exp in cases:
        pi, ei = match_centres(pred, exp, method)
        preds.append(
            np.asarray(pred, float)[pi] if pi.size else np.zeros((0, np.asarray(exp).shape[-1]))
        )
        experts.append(
            np.asarray(exp, float)[ei] if ei.size else np.zeros((0, np.asarray(exp).shape[-1]))
        )
        unmatched += len(exp) - len(set(ei.tolist()))
    p = np.concatenate(preds) if preds else np.zeros((0, 2))
    e = np.concatenate(experts) if experts else np.zeros((0, 2))
    if p.shape[0] == 0:
        raise DataError("no predicted centre could be matched to an expert centre")
    out = centre_agreement(p, e)
    out["n_matched"] = int(p.shape[0])
    out["n_unmatched_expert"] = int(unmatched)
    return out
