"""Source-shortcut probe: can the data source (or centre) be predicted from the images?

In hybrid datasets each class often comes from its own source (Liang et al. 2020: normal X-rays from RSNA,
COVID-19 X-rays from CCD), so a classifier can score well by recognising the source rather than the
disease. The probe fits a cross-validated logistic regression from simple image features (downsampled
pixels, intensity histogram) or from a model's feature vectors to the source label and reports the
out-of-fold AUROC (binary, or macro one-vs-rest for several sources). An AUROC near 1 beside a near-1
disease AUROC is a warning that the disease result may be a source shortcut; about 0.5 is chance.

:func:`confound_check` looks at the test set's design rather than at the images: the *label purity* of a
grouping (source or centre) is the share of cases whose label equals the majority label of their group.
1.0 means the group alone names every label (Liang et al.'s experiment A: every covid19 X-ray from one
source, every normal from another); the base rate (the share of the overall majority label) is what
purity is without any grouping. An experiment is flagged as confounded when, for source or centre, the
purity is at least ``EvaluateConfig.confound_purity`` (0.95), above the base rate, with at least two
groups.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from covidscan.errors import DataError

log = logging.getLogger(__name__)


def _as_2d(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 3:
        img = img.mean(-1)
    elif img.ndim == 3:  # volume: mean projection along z
        img = img.mean(0)
    if img.ndim != 2:
        raise DataError(f"shortcut features need 2D images (or volumes), got shape {img.shape}")
    return img


def pixel_features(images: Sequence[np.ndarray], size: int = 16) -> np.ndarray:
    """Each image resized (area averaging) to ``size x size`` and flattened.

    Args:
        images: 2D images (H, W), RGB (H, W, 3, averaged) or volumes (D, H, W, mean projection).
        size: side of the thumbnail.

    Returns:
        Array (n, size * size).
    """
    return np.stack(
        [
            cv2.resize(_as_2d(im), (size, size), interpolation=cv2.INTER_AREA).ravel()
            for im in images
        ]
    )


def histogram_features(
    images: Sequence[np.ndarray], bins: int = 32, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Normalised intensity histogram of each image on one common range.

    Args:
        images: images as for :func:`pixel_features`.
        bins: number of histogram bins.
        value_range: (low, high) of the bins; default the pooled min/max of all images.

    Returns:
        Array (n, bins); each row sums to 1.
    """
    flat = [_as_2d(im).ravel() for im in images]
    if value_range is None:
        value_range = (min(float(f.min()) for f in flat), max(float(f.max()) for f in flat))
        if value_range[1] <= value_range[0]:
            value_range = (value_range[0], value_range[0] + 1.0)
    rows = []
    for f in flat:
        h, _ = np.histogram(np.clip(f, *value_range), bins=bins, range=value_range)
        rows.append(h / max(h.sum(), 1))
    return np.stack(rows)


def source_predictability(
    features: np.ndarray, groups: Sequence[str] | np.ndarray, n_splits: int = 5, seed: int = 0
) -> dict[str, float | int]:
    """Out-of-fold AUROC of a logistic regression predicting the group (source/centre) from features.

    Folds are stratified; ``n_splits`` is lowered to the smallest group's size when needed (at least 2).

    Args:
        features: array (n, d).
        groups: the group label of each row (at least two distinct groups).
        n_splits: cross-validation folds (``EvaluateConfig.shortcut_folds``).
        seed: fold shuffling seed.

    Returns:
        ``{"auroc", "n", "n_groups", "n_splits"}``; AUROC is macro one-vs-rest for > 2 groups.

    Raises:
        DataError: fewer than two groups, or a group with a single case.
    """
    x = np.asarray(features, dtype=float)
    labels, y = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise DataError(
            f"features must be (n, d) with one group per row, got {x.shape} and {y.size} groups"
        )
    if labels.size < 2:
        raise DataError("the shortcut probe needs at least two sources/centres")
    smallest = int(np.bincount(y).min())
    if smallest < 2:
        raise DataError("the shortcut probe needs at least two cases of every source/centre")
    k = min(n_splits, smallest)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    proba = cross_val_predict(model, x, y, cv=cv, method="predict_proba")
    if labels.size == 2:
        auc = roc_auc_score(y, proba[:, 1])
    else:
        auc = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    return {"auroc": float(auc), "n": int(y.size), "n_groups": int(labels.size), "n_splits": int(k)}


def shortcut_table(
    feature_sets: Mapping[str, np.ndarray],
    targets: Mapping[str, Sequence[str] | np.ndarray],
    disease_auroc: float | None = None,
    disease_n: int = 0,
    n_splits: int = 5,
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """The probe for every (feature set, target) pair, plus the disease AUROC row for comparison.

    Args:
        feature_sets: name -> features (n, d), e.g. {"pixels 16x16": ..., "histogram": ...,
            "model features": ...}.
        targets: name -> group label per case, e.g. {"source": ..., "centre": ...}. Targets with a
            single group are reported with AUROC NaN and a note.
        disease_auroc: the model's disease AUROC on the same cases, reported as the last row.
        disease_n: number of cases behind ``disease_auroc``.
        n_splits: cross-validation folds.
        seed: fold seed.

    Returns:
        Rows ``{"features", "target", "auroc", "n", "n_groups", "note"}``.
    """
    rows: list[dict[str, float | int | str]] = []
    for fname, feats in feature_sets.items():
        for tname, groups in targets.items():
            try:
                res = source_predictability(feats, groups, n_splits=n_splits, seed=seed)
                rows.append({"features": fname, "target": tname, **res, "note": ""})
            except DataError as exc:
                rows.append(
                    {
                        "features": fname,
                        "target": tname,
                        "auroc": float("nan"),
                        "n": len(groups),
                        "n_groups": len(set(map(str, groups))),
                        "n_splits": 0,
                        "note": str(exc),
                    }
                )
    if disease_auroc is not None:
        rows.append(
            {
                "features": "model",
                "target": "disease",
                "auroc": float(disease_auroc),
                "n": int(disease_n),
                "n_groups": 2,
                "n_splits": 0,
                "note": "the model's disease AUROC, for comparison",
            }
        )
    return rows


def label_purity(labels: Sequence[str] | np.ndarray, groups: Sequence[str] | np.ndarray) -> float:
    """The share of cases whose label equals the majority label of their group (1.0: the group names the label).

    Raises:
        DataError: no cases, or labels and groups of different lengths.
    """
    y, g = np.asarray(labels).astype(str), np.asarray(groups).astype(str)
    if y.size == 0 or y.shape != g.shape:
        raise DataError(f"label purity needs one group per case, got {y.size} labels and {g.size} groups")
    _, gi = np.unique(g, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    counts = np.zeros((gi.max() + 1, yi.max() + 1), dtype=int)
    np.add.at(counts, (gi, yi), 1)
    return float(counts.max(1).sum() / y.size)


def confound_check(labels: Sequence[str] | np.ndarray, groupings: Mapping[str, Sequence[str] | np.ndarray], warn_at: float = 0.95) -> dict[str, float | int | str | bool]:
    """Is the label (almost) determined by one of the groupings (source, centre)?

    Args:
        labels: the class label of each test case.
        groupings: name -> group of each case, e.g. {"source": ..., "centre": ...}; the first of the
            highest purity is reported.
        warn_at: the purity at which the experiment is flagged (``EvaluateConfig.confound_purity``).

    Returns:
        ``{"by", "purity", "base_rate", "n_groups", "warn_at", "confounded", "warning"}``; ``warning`` is
        "" when the experiment is not flagged.

    Raises:
        DataError: no grouping, or as :func:`label_purity`.
    """
    if not groupings:
        raise DataError("confound check: no grouping (source/centre) given")
    y = np.asarray(labels).astype(str)
    values, counts = np.unique(y, return_counts=True)
    base = float(counts.max() / y.size) if y.size else float("nan")
    rows = []
    for name, groups in groupings.items():
        rows.append((label_purity(y, groups), len(set(np.asarray(groups).astype(str))), name))
    purity, n_groups, by = max(rows, key=lambda r: r[0])  # max keeps the first of equal purities
    confounded = bool(purity >= warn_at and purity > base and n_groups >= 2)
    warning = ""
    if confounded:
        warning = (f"CONFOUNDED: the {by} determines the label for {purity:.1%} of the test cases (warn at {warn_at:.0%}; "
                   f"the majority class alone: {base:.1%}); the model may recognise the {by}, not the disease, and its "
                   f"indices do not show that it detects COVID-19")  # fmt: skip
    return {"by": by, "purity": purity, "base_rate": base, "n_groups": int(n_groups), "warn_at": float(warn_at),
            "confounded": confounded, "warning": warning}  # fmt: skip
