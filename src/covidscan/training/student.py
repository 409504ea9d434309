"""One student run of the 2D framework (CNNCF, with or without the teachers' fused soft labels) on a task's
train-val records minus an internal validation fold, and what it leaves for the threshold and the registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from covidscan.training.datasets import example_batch
from covidscan.training.tasks import POSITIVE, build_classifier, image_dataset, predict, seeded

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class StudentRun:
    """A trained student and its validation results.

    Attributes:
        model: the student with the weights training kept.
        val_auroc: covid19-vs-rest AUROC on the validation fold.
        gate_opened: whether its Control Gate Block opened.
        n_train, n_val: training and validation records.
        history: the loop's per-epoch metrics.
        val_positive: per validation record, whether it is covid19.
        val_score: the student's covid19 probability per validation record (the threshold is chosen on these).
        example: a one-sample float32 input batch (MLflow's input example).
    """

    model: torch.nn.Module
    val_auroc: float
    gate_opened: bool
    n_train: int
    n_val: int
    history: list[dict[str, float]]
    val_positive: np.ndarray
    val_score: np.ndarray
    example: np.ndarray


def train_student(
    task: str, rows: pd.DataFrame, val_fold: int, params: Any, teachers: Any, *, root: Path,
    callback: Callable[[dict[str, float]], None] | None = None, checkpoints: Path | None = None,
) -> StudentRun:  # fmt: skip
    """Train one student on ``rows`` (a task's train-val records, :func:`covidscan.training.tasks.task_rows`)
    minus fold ``val_fold``, validating on that fold.

    Args:
        task: ``xray`` or ``ct``.
        rows: the task's train-val records.
        val_fold: the fold held out for the gate and the threshold.
        params: the student's params (tuned values applied: :func:`covidscan.tuning.tuned.tuned_params`).
        teachers: a :class:`~covidscan.training.distill.TeacherEnsemble`, or None (no distillation).
        root: the preprocessed data folder (the images' paths are relative to it).
        callback: the loop's per-epoch callback.
        checkpoints: the folder of this run's resumable checkpoints (None: none written).
    """
    from covidscan.evaluation.curves import auroc_exact
    from covidscan.preprocess.augment import Augment2D
    from covidscan.training.loop import train

    pre = params.preprocess
    train_rows, val_rows = rows[rows["fold"] != val_fold], rows[rows["fold"] == val_fold]
    aug = seeded(Augment2D(pre, seed=params.run.seed))
    train_set = image_dataset(train_rows, "image_path", train_rows["y"].tolist(), aug, root=root)
    val_set = image_dataset(val_rows, "image_path", val_rows["y"].tolist(), root=root)
    model = build_classifier("student", params.models, task, pre)
    kind = "kd" if teachers is not None else "nokd"
    result = train(
        model, train_set, val_set, optim=params.train.classifier, run=params.run, class_weights=params.train.class_weights,
        keep=params.train.keep, lambda_aux=params.models.cnncf.lambda_aux, positive_index=POSITIVE,
        teachers=teachers, distill=params.train.distill, checkpoint_dir=checkpoints, callback=callback,
    )  # fmt: skip
    model.load_state_dict(result.state_dict)
    for warning in result.warnings:
        log.warning("%s %s: %s", task, kind, warning)
    probs = predict(model, val_set)
    is_pos = (val_rows["y"] == POSITIVE).to_numpy()
    score = probs[:, POSITIVE]
    return StudentRun(
        model=model, val_auroc=auroc_exact(is_pos, score), gate_opened=bool(result.gate_opened), n_train=len(train_rows), n_val=len(val_rows),
        history=result.history, val_positive=is_pos, val_score=score, example=example_batch(val_set, 1),
    )  # fmt: skip
