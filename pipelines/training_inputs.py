"""What the training stages share: which records each task trains on, datasets, and MLflow epoch logging.

The tasks of the 2D framework (``xray``: XMDS, ``ct``: CTMDS; classes normal, pneumonia, covid19), their
rows and datasets live in :mod:`covidscan.training.tasks` (shared with the tuning studies) and are
re-exported here. Influenza records (XHDS, CTHDS) are left out of teacher and student training (the
paper's classifier has three classes); experiment C (covid19 vs influenza) therefore needs a model that has
an influenza output: :func:`covidscan.evaluation.experiment.class_scores` refuses a model that lacks one of
an experiment's classes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from covidscan.errors import DataError
from covidscan.training import tasks
from covidscan.training.tasks import (  # noqa: F401 - re-exported for the stage modules
    CLASSES,
    POSITIVE,
    TASKS,
    VOLUME_CLASSES,
    build_classifier,
    build_regressor,
    build_volume_classifier,
    in_channels,
    input_size,
    predict,
    seeded,
    subset_rows,
    task_classes,
    task_rows,
)

log = logging.getLogger("pipelines.training_inputs")

PROCESSED = Path("data/processed")  # the data layout of dvc.yaml (stage side: the library takes paths)
SPLITS = Path("data/splits/splits.parquet")
MANIFEST = Path("data/interim/ingest/manifest.parquet")
CLINICAL = Path("data/interim/ingest/clinical.parquet")
TEACHERS_DIR = Path("models/teachers")


def load_tables(processed: Path = PROCESSED, splits: Path = SPLITS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`covidscan.training.tasks.load_tables` on the pipeline's folders."""
    return tasks.load_tables(processed, splits)


def image_dataset(rows: pd.DataFrame, column: str, targets: Sequence[Any], augment: Any = None, **kwargs: Any) -> Any:
    """:func:`covidscan.training.tasks.image_dataset` over the preprocess stage's folder."""
    return tasks.image_dataset(rows, column, targets, augment, root=PROCESSED, **kwargs)


class CropDataset(Dataset):
    """Lesion crops (one ``(n_crops, 3, s, s)`` uint8 file per record) as one sample per crop, /255.

    Args:
        items: (crops file relative to ``root``, crop index, target vector).
        root: folder of the crops files.
    """

    def __init__(self, items: Sequence[tuple[str, int, Sequence[float]]], root: Path = PROCESSED) -> None:
        self.items = [(str(root / p), int(i), list(map(float, t))) for p, i, t in items]
        self.targets = [t for _, _, t in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = key if isinstance(key, int) else int(key[0])
        path, i, target = self.items[index]
        crops = np.load(path, mmap_mode="r", allow_pickle=False)
        return torch.from_numpy(np.array(crops[i], dtype=np.float32)) / 255.0, torch.tensor(target, dtype=torch.float32)


def example_batch(dataset: Any, n: int = 1) -> np.ndarray:
    """A small float32 batch for MLflow's input example."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))]).numpy().astype(np.float32)


def manifest_digest(path: Path = MANIFEST) -> str:
    """The data version: sha256 of the ingest manifest file, first 16 hex digits."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def set_threshold(model: torch.nn.Module, threshold: float) -> None:
    """Store the operating threshold on the model's card (and its build record, which save_model keeps)."""
    import dataclasses

    card = model.card  # type: ignore[attr-defined]
    build = dict(card.build, threshold=float(threshold))
    model.card = dataclasses.replace(card, threshold=float(threshold), build=build)  # type: ignore[attr-defined]


def set_operating_threshold(model: torch.nn.Module, y_val: Any, scores_val: Any, evaluate: Any, what: str) -> Any:
    """Choose the model's operating threshold on its validation data (``evaluate.threshold_rule``,
    covidscan.evaluation.summary.operating_point), store it on its card and return the OperatingPoint."""
    from covidscan.evaluation.summary import operating_point

    point = operating_point(evaluate, np.asarray(y_val), np.asarray(scores_val))
    set_threshold(model, point.threshold)
    log.info("%s: operating threshold %.3f (%s on %d validation cases)%s", what, point.threshold, point.rule, point.n_val,
             f"; {point.note}" if point.note else "")  # fmt: skip
    return point


class EpochLogger:
    """The loop's callback: logs each epoch's metrics to MLflow (step = epoch) under ``prefix``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.history: list[dict[str, float]] = []

    def __call__(self, metrics: dict[str, float]) -> None:
        from covidscan.tracking.runs import log_metrics

        self.history.append(dict(metrics))
        step = int(metrics.get("epoch", len(self.history) - 1))
        log_metrics({f"{self.prefix}{k}": v for k, v in metrics.items() if k != "epoch"}, step=step)


def log_loss_curve(histories: dict[str, list[dict[str, float]]], artifact_file: str) -> None:
    """A matplotlib figure of train/val loss per epoch (one line pair per history) logged to MLflow."""
    import matplotlib.pyplot as plt

    from covidscan.tracking.runs import log_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, history in histories.items():
        epochs = [h["epoch"] + 1 for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{name} train")
        if history and "val_loss" in history[0]:
            ax.plot(epochs, [h.get("val_loss", np.nan) for h in history], marker="s", linestyle="--", label=f"{name} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    log_figure(fig, artifact_file)
    plt.close(fig)


def log_peak_rss() -> float:
    from covidscan.tracking.runs import log_metrics
    from covidscan.training.memory import peak_rss_mb

    value = peak_rss_mb()
    log_metrics({"peak_rss_mb_stage": value})
    return value


# ------------------------------------------------------------------- seed 004 (3D, centre-held-out)
VOLUME_SUBSET = "CSDS"


def volume_split(index: pd.DataFrame, splits: pd.DataFrame, val_fold: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """CSDS ct_volume records: (train, validation, test). Train-val = the training centres; the
    validation subset is train-val fold ``val_fold``; test = the held-out centres. ``y`` = binary label."""
    parts = []
    for part in ("trainval", "test"):
        rows = subset_rows(index, splits, VOLUME_SUBSET, part)
        rows = rows[rows["volume_path"].astype(str) != ""].copy()
        rows["y"] = rows["binary_label"].astype(int)
        parts.append(rows.reset_index(drop=True))
    trainval, test = parts
    if trainval.empty:
        raise DataError(f"{VOLUME_SUBSET}: no train-val ct_volume records (data/splits, data/processed)")
    train, val = trainval[trainval["fold"] != val_fold], trainval[trainval["fold"] == val_fold]
    if train.empty or val.empty:
        raise DataError(f"{VOLUME_SUBSET}: validation fold {val_fold} leaves train {len(train)} / validation {len(val)} records")
    return train.reset_index(drop=True), val.reset_index(drop=True), test


def volume_dataset(rows: pd.DataFrame, augment: Any = None) -> Any:
    """(1, z, y, x) float32 volumes in [0, 1] (stored float16) with binary targets."""
    return image_dataset(rows, "volume_path", rows["y"].astype(int).tolist(), augment, add_channel=True, scale=1.0)


def train_volume_model(name: str, params: Any, train_rows: pd.DataFrame, val_rows: pd.DataFrame, prefix: str = "") -> tuple[Any, Any]:
    """Train a 3D network (``csacnet`` or ``resnet3d``) with ``train.csacnet`` and the 3D augmentation."""
    from covidscan.preprocess.augment import Augment3D
    from covidscan.training.loop import train

    pre = params.preprocess
    train_set = volume_dataset(train_rows, seeded(Augment3D(pre, seed=params.run.seed)))
    val_set = volume_dataset(val_rows)
    model = build_volume_classifier(name, params.models, pre)
    result = train(model, train_set, val_set, optim=params.train.csacnet, run=params.run, class_weights=params.train.class_weights,
                   keep=params.train.keep, positive_index=1, callback=EpochLogger(prefix))  # fmt: skip
    model.load_state_dict(result.state_dict)
    return model, result


def checkpoint_dir(base: Path, params: Any, *data_files: Path) -> Path:
    """``base/<digest>``: resumable checkpoints keyed by the effective params and the input tables, so a
    rerun after a parameter or data change starts fresh instead of resuming stale (or refused) weights."""
    h = hashlib.sha256(params.model_dump_json().encode())
    for path in data_files:
        if path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return base / h.hexdigest()[:12]
