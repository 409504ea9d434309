"""Yao et al.'s classic baselines: volume features for the SVM and the random forest, and their scores.

The ``baselines`` stage trains them (with MONAI's 3D ResNet) on the CSAC-Net split and saves them under
``models/baselines/``; the evaluate stage of experiment S scores them on the same test volumes as
CSAC-Net. Both use these functions, so the features and the scores are the same in both places.

- :func:`volume_features`: per volume, the volume average-pooled to ``grid``^3 (flattened) and a
  ``bins``-bin intensity histogram on [0, 1] (normalised). The settings are saved next to the models
  (:data:`FEATURES_FILE`, :func:`save_feature_settings` / :func:`load_feature_settings`).
- :func:`classic_scores`: a fitted scikit-learn classifier's positive-class score in [0, 1]:
  ``predict_proba`` when the estimator has it (the random forest), else the logistic sigmoid of
  ``decision_function`` (the SVM, which has no probability model), so 0.5 is each estimator's own
  decision boundary (:data:`CLASSIC_THRESHOLD`) and the ranking (AUROC) is the decision function's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from covidscan.errors import DataError

CLASSIC: tuple[str, ...] = ("svm", "random_forest")  # saved as <name>.joblib
NETWORK = "resnet3d"  # saved as resnet3d.pt (zoo.save_model)
FEATURES_FILE = "features.json"
CLASSIC_THRESHOLD = 0.5  # the estimators' own boundary: P = 0.5 (forest), decision function 0 (SVM)


def volume_features(volumes: Iterable[Any], grid: int, bins: int) -> np.ndarray:
    """Per volume ``(1, z, y, x)`` in [0, 1]: adaptive average pool to grid^3 (flattened) + a normalised histogram."""
    import torch

    feats = []
    for x in volumes:
        t = torch.as_tensor(x, dtype=torch.float32)
        pooled = torch.nn.functional.adaptive_avg_pool3d(t.unsqueeze(0), grid).flatten().numpy()
        hist, _ = np.histogram(t.numpy(), bins=bins, range=(0.0, 1.0))
        feats.append(np.concatenate([pooled, hist / max(1, hist.sum())]))
    return np.asarray(feats, dtype=np.float32).reshape(len(feats), -1)


def classic_scores(estimator: Any, features: np.ndarray) -> np.ndarray:
    """The positive-class score in [0, 1] of a fitted binary scikit-learn classifier (see the module)."""
    if len(features) == 0:
        return np.zeros(0)
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(features), dtype=float)[:, 1]
    return 1.0 / (1.0 + np.exp(-np.asarray(estimator.decision_function(features), dtype=float)))


def save_feature_settings(folder: str | Path, grid: int, bins: int) -> Path:
    path = Path(folder) / FEATURES_FILE
    path.write_text(json.dumps({"grid": int(grid), "bins": int(bins)}, sort_keys=True) + "\n")
    return path


def load_feature_settings(folder: str | Path) -> dict[str, int]:
    """``{"grid", "bins"}`` the classic baselines were trained with.

    Raises:
        DataError: the settings file is missing (a baselines folder from before it was written: rerun the stage).
    """
    path = Path(folder) / FEATURES_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; rerun the baselines stage (dvc repro baselines)")
    data = json.loads(path.read_text())
    return {"grid": int(data["grid"]), "bins": int(data["bins"])}
