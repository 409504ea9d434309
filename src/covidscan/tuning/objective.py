"""The objective of a study: the cross-validated validation AUROC of the student on the train-val folds.

Only the train-val part of the target's sub-dataset is read (``part == "trainval"`` rows of
``data/splits``); the test part's records and arrays are never opened. Each trial trains the student
with the trial's values on the first ``tune.folds`` folds (train on the other train-val folds, validate
on that fold; ``tune.epochs`` epochs), reports the validation AUROC after every epoch (step = fold x
epochs + epoch) so the pruner can stop it, and returns the mean AUROC (covid19 vs rest) over the folds.

With ``tune.distill`` and teacher models present, a fold's student distils from the teachers of that
same fold (``models/teachers/<task>/<TS>-f<k>.pt``, trained without fold k), so no validation record
was seen by a teacher; their probabilities are averaged (one fold model per teacher).

An architecture the model constructor refuses (ModelConfigError) ends the trial as PRUNED with the
user attributes ``pruned_reason = "invalid_architecture"`` and ``error``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from covidscan.config import Params
from covidscan.errors import DataError, ModelConfigError
from covidscan.training import tasks
from covidscan.tuning.space import suggest
from covidscan.tuning.tuned import apply_values, target_task, tuned_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneData:
    """Where a study's inputs are (picklable, so worker processes rebuild the objective).

    Attributes:
        processed: the preprocess stage's folder (``index.parquet`` + arrays).
        splits: the splits table.
        teachers: the teachers' folder (``<task>/<TS>-f<k>.pt``); None: no distillation.
    """

    processed: Path
    splits: Path
    teachers: Path | None = Path("models/teachers")


class Objective:
    """Callable ``objective(trial) -> mean validation AUROC`` for one target.

    Args:
        params: the configuration.
        target: ``student-xray`` or ``student-ct``.
        data: the input locations.

    Raises:
        DataError: no train-val records, or too few folds with both training and validation records.
    """

    def __init__(self, params: Params, target: str, data: TuneData) -> None:
        self.params, self.target, self.task = params, target, target_task(target)
        index, splits = tasks.load_tables(data.processed, data.splits)
        self.rows = tasks.task_rows(index, splits, self.task, part="trainval")  # the test part is never selected
        self.root = data.processed
        folds = sorted(int(f) for f in self.rows["fold"].unique() if int(f) >= 0)
        usable = [f for f in folds if not self.rows[self.rows["fold"] == f].empty and not self.rows[self.rows["fold"] != f].empty]
        self.folds = usable[: params.tune.folds] if params.tune.folds is not None else usable
        if not self.folds:
            raise DataError(f"{self.target}: no train-val fold with both training and validation records ({data.splits})")
        self.teachers = self._load_teachers(data.teachers) if params.tune.distill and data.teachers is not None else {}
        self.with_kd = bool(self.teachers) and all(self.teachers.get(f) for f in self.folds)
        if params.tune.distill and not self.with_kd:
            log.warning("%s: no teacher models for folds %s under %s; tuning without distillation", target, self.folds, data.teachers)

    def _load_teachers(self, root: Path) -> dict[int, dict[str, list[Any]]]:
        from covidscan.models.zoo import load_model

        out: dict[int, dict[str, list[Any]]] = {}
        for fold in self.folds:
            for name in self.params.models.teachers:
                path = root / self.task / f"{name}-f{fold}.pt"
                if path.is_file() and path.stat().st_size > 0:  # 0 bytes: an unconfigured fold's marker
                    out.setdefault(fold, {})[name] = [load_model(path)]
        return out

    def __call__(self, trial: optuna.Trial) -> float:
        from covidscan.evaluation.curves import auroc_exact
        from covidscan.training.distill import TeacherEnsemble
        from covidscan.training.loop import train

        values = suggest(trial, self.params, with_kd=self.with_kd)
        p = tuned_params(self.params, self.target, apply_values(self.params, values))
        tune = p.tune
        optim = p.train.classifier.model_copy(update={
            "epochs": tune.epochs or p.train.classifier.epochs,
            "max_batches_per_epoch": tune.max_batches_per_epoch or p.train.classifier.max_batches_per_epoch,
        })  # fmt: skip
        scores: list[float] = []
        for i, fold in enumerate(self.folds):
            try:
                model = tasks.build_classifier("student", p.models, self.task, p.preprocess)
            except ModelConfigError as err:
                trial.set_user_attr("pruned_reason", "invalid_architecture")
                trial.set_user_attr("error", str(err)[:500])
                raise optuna.TrialPruned(f"invalid architecture: {err}") from None
            train_rows, val_rows = self.rows[self.rows["fold"] != fold], self.rows[self.rows["fold"] == fold]
            train_set = tasks.image_dataset(train_rows, "image_path", train_rows["y"].tolist(), root=self.root)
            val_set = tasks.image_dataset(val_rows, "image_path", val_rows["y"].tolist(), root=self.root)
            teachers = None
            if self.with_kd:
                kd = p.train.distill.model_copy(update={"fusion": "mean", "teacher_mode": "mean_folds"})
                teachers = TeacherEnsemble(self.teachers[fold], kd)

            def report(metrics: dict[str, float], step0: int = i * optim.epochs) -> None:
                value = metrics.get("val_auroc", math.nan)
                if math.isfinite(value):
                    trial.report(float(value), step0 + int(metrics["epoch"]))
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at fold {fold} epoch {int(metrics['epoch'])}")

            result = train(
                model, train_set, val_set, optim=optim, run=p.run, class_weights=p.train.class_weights, keep=p.train.keep,
                lambda_aux=p.models.cnncf.lambda_aux, positive_index=tasks.POSITIVE, teachers=teachers, distill=p.train.distill,
                callback=report,
            )  # fmt: skip
            model.load_state_dict(result.state_dict)
            probs = tasks.predict(model, val_set)
            scores.append(auroc_exact((val_rows["y"] == tasks.POSITIVE).to_numpy(), probs[:, tasks.POSITIVE]))
            trial.set_user_attr(f"fold{fold}_gate_opened", bool(result.gate_opened))
        finite = [s for s in scores if math.isfinite(s)]
        trial.set_user_attr("fold_auroc", [None if not math.isfinite(s) else round(s, 6) for s in scores])
        if not finite:
            trial.set_user_attr("note", "validation AUROC undefined (a fold lacks a class); scored 0.5")
            return 0.5
        return float(np.mean(finite))
