"""The 3D networks' data and training (CSAC-Net, Liang et al. 2021, and its 3D ResNet baseline): the CSDS
centre-held-out split, CT-volume datasets, and one training run with the 3D augmentation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from covidscan.errors import DataError, NoTrainingData
from covidscan.training.tasks import build_volume_classifier, image_dataset, seeded, subset_rows

if TYPE_CHECKING:
    from covidscan.training.loop import TrainResult

VOLUME_SUBSET = "CSDS"


def volume_split(index: pd.DataFrame, splits: pd.DataFrame, val_fold: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """CSDS ct_volume records: (train, validation, test). Train-val = the training centres; the
    validation subset is train-val fold ``val_fold``; test = the held-out centres. ``y`` = binary label.

    Raises:
        NoTrainingData: no train-val volume records.
        DataError: ``val_fold`` leaves the training or validation part empty.
    """
    parts = []
    for part in ("trainval", "test"):
        rows = subset_rows(index, splits, VOLUME_SUBSET, part)
        rows = rows[rows["volume_path"].astype(str) != ""].copy()
        rows["y"] = rows["binary_label"].astype(int)
        parts.append(rows.reset_index(drop=True))
    trainval, test = parts
    if trainval.empty:
        raise NoTrainingData(f"{VOLUME_SUBSET}: no train-val ct_volume records (the splits table, the preprocessed index)")
    train, val = trainval[trainval["fold"] != val_fold], trainval[trainval["fold"] == val_fold]
    if train.empty or val.empty:
        raise DataError(f"{VOLUME_SUBSET}: validation fold {val_fold} leaves train {len(train)} / validation {len(val)} records")
    return train.reset_index(drop=True), val.reset_index(drop=True), test


def volume_dataset(rows: pd.DataFrame, augment: Any = None, *, root: Path) -> Any:
    """(1, z, y, x) float32 volumes in [0, 1] (stored float16, paths relative to ``root``) with binary targets."""
    return image_dataset(rows, "volume_path", rows["y"].astype(int).tolist(), augment, add_channel=True, scale=1.0, root=root)


def train_volume_model(
    name: str, params: Any, train_rows: pd.DataFrame, val_rows: pd.DataFrame, *, root: Path,
    callback: Callable[[dict[str, float]], None] | None = None, checkpoint_dir: Path | None = None,
) -> tuple[torch.nn.Module, TrainResult]:  # fmt: skip
    """Train a 3D network (``csacnet`` or ``resnet3d``) with ``train.csacnet`` and the 3D augmentation.

    Args:
        name: the zoo name.
        params: the stage's params (``preprocess``, ``run``, ``models``, ``train``).
        train_rows, val_rows: from :func:`volume_split`.
        root: the preprocessed data folder (the volumes' paths are relative to it).
        callback: the loop's per-epoch callback (e.g. :class:`covidscan.tracking.runs.EpochLogger`).
        checkpoint_dir: the folder of the resumable checkpoints (None: none written).

    Returns:
        The model with the weights training kept, and the loop's
        :class:`~covidscan.training.loop.TrainResult`.
    """
    from covidscan.preprocess.augment import Augment3D
    from covidscan.training.loop import train

    pre = params.preprocess
    train_set = volume_dataset(train_rows, seeded(Augment3D(pre, seed=params.run.seed)), root=root)
    val_set = volume_dataset(val_rows, root=root)
    model = build_volume_classifier(name, params.models, pre)
    result = train(model, train_set, val_set, optim=params.train.csacnet, run=params.run, class_weights=params.train.class_weights,
                   keep=params.train.keep, positive_index=1, checkpoint_dir=checkpoint_dir, callback=callback)  # fmt: skip
    model.load_state_dict(result.state_dict)
    return model, result
