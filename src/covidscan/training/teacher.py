"""The teachers' cross-validation: one teacher fold model trained with its out-of-fold predictions, and the
folds' AUROCs aggregated for the distillation weights (Liang et al. 2020; SPEC section 3).

A teacher (TS1..TS4) trains once per fold k of a task's train-val part: on the folds != k, validating on
fold k (the Control Gate Block opens on that validation), and predicts fold k (its out-of-fold
probabilities). Its files, under the teachers' folder ``<dir>``:

- ``<dir>/<task>/<TS>-f<k>.pt``: the fold model (:func:`covidscan.models.zoo.save_model`);
- ``<dir>/<task>/<TS>-f<k>.oof.parquet``: the fold's out-of-fold table (:func:`oof_columns`).

A fold that does not run (not configured, or no data) has marker files instead: a 0-byte ``.pt`` and an
empty table (:func:`write_marker`); :func:`covidscan.training.distill.load_teacher_folds` and
:func:`read_oof` skip them. :func:`aggregate_cv` turns the out-of-fold tables into each teacher's fold
AUROCs (covid19 vs rest), their mean and the pooled out-of-fold AUROC.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from covidscan.training.tasks import CLASSES, POSITIVE, build_classifier, image_dataset, predict, seeded, task_classes

log = logging.getLogger(__name__)

POSITIVE_COLUMN = f"p_{CLASSES[POSITIVE]}"  # the out-of-fold tables' covid19 probability


def oof_columns(task: str) -> list[str]:
    """The out-of-fold table's columns for a task (one probability column per class of the task)."""
    return ["record_id", "task", "teacher", "fold", "label", "y", *[f"p_{c}" for c in task_classes(task)]]


def fold_paths(directory: Path, task: str, teacher: str, fold: int) -> tuple[Path, Path]:
    """``<directory>/<task>/<teacher>-f<fold>.pt`` and its ``.oof.parquet``."""
    base = Path(directory) / task / f"{teacher}-f{fold}"
    return base.with_suffix(".pt"), Path(f"{base}.oof.parquet")


def write_marker(directory: Path, task: str, teacher: str, fold: int, why: str) -> None:
    """Empty outputs for a fold/task that does not run (DVC still needs its outs): a 0-byte model file and
    an empty out-of-fold table."""
    model_path, oof_path = fold_paths(directory, task, teacher, fold)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(b"")
    pd.DataFrame({c: pd.Series(dtype="float64" if c.startswith("p_") else "object") for c in oof_columns(task)}).to_parquet(oof_path, index=False)
    log.warning("%s %s fold %d: %s (wrote empty marker outputs)", task, teacher, fold, why)


@dataclass(frozen=True, eq=False)
class TeacherFold:
    """One trained teacher fold model, as written.

    Attributes:
        model_path, oof_path: the files written (:func:`fold_paths`).
        fold_auroc: covid19-vs-rest AUROC of the out-of-fold predictions (NaN when fold k lacks a class).
        gate_opened: whether its Control Gate Block opened.
        n_train, n_val: training (folds != k) and validation (fold k) records.
        history: the loop's per-epoch metrics.
    """

    model_path: Path
    oof_path: Path
    fold_auroc: float
    gate_opened: bool
    n_train: int
    n_val: int
    history: list[dict[str, float]]

    def summary(self) -> dict[str, float]:
        """The fold's summary metrics (logged per task and fold)."""
        return {"fold_auroc": self.fold_auroc, "gate_opened": float(self.gate_opened), "n_train": self.n_train, "n_val": self.n_val}


def train_teacher_fold(
    task: str, teacher: str, fold: int, rows: pd.DataFrame, params: Any, *, processed: Path, splits: Path, out_dir: Path,
    checkpoints: Path, callback: Callable[[dict[str, float]], None] | None = None,
) -> TeacherFold | None:  # fmt: skip
    """Train teacher ``teacher`` on ``rows`` (a task's train-val records, :func:`covidscan.training.tasks.task_rows`)
    minus fold ``fold``, validate and predict on that fold, and write the fold's files.

    Args:
        task: ``xray`` or ``ct``.
        teacher: the teacher architecture (``TS1``..``TS4``).
        fold: the fold held out.
        rows: the task's train-val records.
        params: the stage's params (``preprocess``, ``run``, ``models``, ``train``).
        processed: the preprocessed data folder (the images' paths are relative to it).
        splits: the split table (with ``processed``'s index, the key of the resumable checkpoints).
        out_dir: the teachers' folder (:func:`fold_paths`).
        checkpoints: the folder of the resumable checkpoints (``<task>/<TS>-f<k>/<digest>/`` below it).
        callback: the loop's per-epoch callback.

    Returns:
        The fold's :class:`TeacherFold`, or None when fold ``fold`` or the other folds hold no record
        (marker files are written instead), and on a torchrun rank other than 0 (it trains its shard;
        rank 0 alone predicts and writes: :mod:`covidscan.training.distributed`).
    """
    from covidscan.evaluation.curves import auroc_exact
    from covidscan.models.zoo import save_model
    from covidscan.preprocess.augment import Augment2D
    from covidscan.training.checkpoint import checkpoint_dir
    from covidscan.training.distributed import is_main_process
    from covidscan.training.loop import train

    pre = params.preprocess
    train_rows, val_rows = rows[rows["fold"] != fold], rows[rows["fold"] == fold]
    if train_rows.empty or val_rows.empty:
        if is_main_process():
            write_marker(out_dir, task, teacher, fold, f"no data (train {len(train_rows)}, val {len(val_rows)})")
        return None
    aug = seeded(Augment2D(pre, seed=params.run.seed))
    train_set = image_dataset(train_rows, "image_path", train_rows["y"].tolist(), aug, root=processed)
    val_set = image_dataset(val_rows, "image_path", val_rows["y"].tolist(), root=processed)
    model = build_classifier(teacher, params.models, task, pre)
    result = train(
        model, train_set, val_set, optim=params.train.classifier, run=params.run, class_weights=params.train.class_weights,
        keep=params.train.keep, lambda_aux=params.models.cnncf.lambda_aux, positive_index=POSITIVE,
        checkpoint_dir=checkpoint_dir(Path(checkpoints) / task / f"{teacher}-f{fold}", params, splits, Path(processed) / "index.parquet"),
        callback=callback,
    )  # fmt: skip
    if not is_main_process():
        return None
    model.load_state_dict(result.state_dict)
    for warning in result.warnings:
        log.warning("%s %s fold %d: %s", task, teacher, fold, warning)
    probs = predict(model, val_set)
    oof = pd.DataFrame({"record_id": val_rows["record_id"].values, "task": task, "teacher": teacher, "fold": fold,
                        "label": val_rows["label"].values, "y": val_rows["y"].values})  # fmt: skip
    for i, c in enumerate(task_classes(task)):
        oof[f"p_{c}"] = probs[:, i]
    model_path, oof_path = fold_paths(out_dir, task, teacher, fold)
    save_model(model, model_path, extra={"history": result.history, "gate_opened": result.gate_opened, "fold": fold})
    oof[oof_columns(task)].to_parquet(oof_path, index=False)
    fold_auroc = auroc_exact((oof["y"] == POSITIVE).to_numpy(), oof[POSITIVE_COLUMN].to_numpy())
    log.info("%s %s fold %d: AUROC %.3f (train %d, val %d)", task, teacher, fold, fold_auroc, len(train_rows), len(val_rows))
    return TeacherFold(model_path=model_path, oof_path=oof_path, fold_auroc=fold_auroc, gate_opened=bool(result.gate_opened),
                       n_train=len(train_rows), n_val=len(val_rows), history=result.history)  # fmt: skip


def read_oof(directory: Path) -> pd.DataFrame:
    """Every non-empty ``<directory>/<task>/<TS>-f<k>.oof.parquet``, concatenated in path order (markers of
    folds that did not run are skipped); an empty table when there is none."""
    tables = []
    for path in sorted(Path(directory).glob("*/*.oof.parquet")):
        table = pd.read_parquet(path)
        if table.empty:
            log.info("%s: empty (fold not configured), skipped", path)
            continue
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=["task", "teacher", "fold", "y", POSITIVE_COLUMN])
    return pd.concat(tables, ignore_index=True)


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


@dataclass(frozen=True)
class TeacherCV:
    """One teacher's cross-validation on one task (covid19 vs rest).

    Attributes:
        folds: the fold numbers, ascending.
        fold_auroc: each fold's AUROC, in fold order (rounded to 6 digits; None when the fold lacks a class).
        mean_auroc: the mean of the finite fold AUROCs (None when there is none).
        oof_auroc: the AUROC of all folds' out-of-fold predictions pooled.
        n: out-of-fold predictions.
    """

    folds: tuple[int, ...]
    fold_auroc: tuple[float | None, ...]
    mean_auroc: float | None
    oof_auroc: float | None
    n: int

    def as_dict(self) -> dict[str, Any]:
        """The ``metrics/cv.json`` entry: ``folds``, ``fold_auroc`` (lists), ``mean_auroc``, ``oof_auroc``, ``n``."""
        return {"folds": list(self.folds), "fold_auroc": list(self.fold_auroc), "mean_auroc": self.mean_auroc, "oof_auroc": self.oof_auroc, "n": self.n}

    def weights(self) -> dict[str, list]:
        """The distillation weights' entry (``folds``, ``fold_auroc``), read by
        :func:`covidscan.training.distill.load_teacher_folds`."""
        return {"folds": list(self.folds), "fold_auroc": list(self.fold_auroc)}


def aggregate_cv(oof: pd.DataFrame) -> dict[str, dict[str, TeacherCV]]:
    """task -> teacher -> :class:`TeacherCV`, from the out-of-fold tables (:func:`read_oof`)."""
    from covidscan.evaluation.curves import auroc_exact

    out: dict[str, dict[str, TeacherCV]] = {}
    if oof.empty:
        return out
    for (task, teacher), rows in oof.groupby(["task", "teacher"], sort=True):
        folds = sorted(int(f) for f in rows["fold"].unique())
        aurocs = [auroc_exact((g["y"] == POSITIVE).to_numpy(), g[POSITIVE_COLUMN].to_numpy()) for g in (rows[rows["fold"] == f] for f in folds)]
        finite = [a for a in aurocs if math.isfinite(a)]
        pooled = auroc_exact((rows["y"] == POSITIVE).to_numpy(), rows[POSITIVE_COLUMN].to_numpy())
        out.setdefault(str(task), {})[str(teacher)] = TeacherCV(
            folds=tuple(folds), fold_auroc=tuple(_clean(a) for a in aurocs), mean_auroc=_clean(sum(finite) / len(finite)) if finite else None,
            oof_auroc=_clean(pooled), n=int(len(rows)),
        )  # fmt: skip
    return out
