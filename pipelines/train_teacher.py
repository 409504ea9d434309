"""DVC stage `train_teacher@<TS>`: one teacher (TS1..TS4), every cross-validation fold, both 2D tasks.

    python -m pipelines.train_teacher --teacher TS1 [--fold 0 ...]

One process per teacher trains its folds one after the other (a process per fold cost ~7 s of
start-up each, 20 times per repro). For each fold k and task (``xray``: XMDS train-val, ``ct``: CTMDS
train-val CT stacks; the task's classes, see covidscan.training.tasks) the teacher trains on folds != k and validates on fold k
(the Control Gate Block opens on that validation). Writes ``models/teachers/<task>/<TS>-f<k>.pt``
(zoo.save_model) and ``models/teachers/<task>/<TS>-f<k>.oof.parquet`` (the fold's out-of-fold
probabilities). A fold index >= ``splits.n_folds`` (or a task without data) writes empty marker
files (a 0-byte .pt and an empty table) and logs "fold not configured". Params: ``run``,
``models``, ``preprocess`` (augmentation), ``train.classifier``, ``train.class_weights``, ``train.keep``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from pipelines import load_stage_params, stage_main
from pipelines import training_inputs as ti

log = logging.getLogger("pipelines.train_teacher")

MAX_FOLDS = 5  # dvc.yaml declares the outputs of folds 0-4 (the paper's 5-fold CV); unconfigured folds write markers


def oof_columns(task: str) -> list[str]:
    """The out-of-fold table's columns for a task (one probability column per class of the task)."""
    return ["record_id", "task", "teacher", "fold", "label", "y", *[f"p_{c}" for c in ti.task_classes(task)]]


def out_paths(task: str, teacher: str, fold: int, root: Path = ti.TEACHERS_DIR) -> tuple[Path, Path]:
    base = root / task / f"{teacher}-f{fold}"
    return base.with_suffix(".pt"), Path(f"{base}.oof.parquet")


def write_marker(task: str, teacher: str, fold: int, why: str) -> None:
    """Empty outputs for a fold/task that does not run (DVC still needs its outs)."""
    model_path, oof_path = out_paths(task, teacher, fold)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(b"")
    pd.DataFrame({c: pd.Series(dtype="float64" if c.startswith("p_") else "object") for c in oof_columns(task)}).to_parquet(oof_path, index=False)
    log.warning("%s %s fold %d: %s (wrote empty marker outputs)", task, teacher, fold, why)


def train_task(task: str, teacher: str, fold: int, rows: pd.DataFrame, params) -> dict[str, float]:
    """Train one teacher fold model on a task; returns its summary metrics."""
    from covidscan.evaluation.curves import auroc_exact
    from covidscan.models.zoo import save_model
    from covidscan.preprocess.augment import Augment2D
    from covidscan.tracking.runs import EpochLogger, log_loss_curve
    from covidscan.training.checkpoint import checkpoint_dir
    from covidscan.training.loop import train

    pre = params.preprocess
    train_rows, val_rows = rows[rows["fold"] != fold], rows[rows["fold"] == fold]
    if train_rows.empty or val_rows.empty:
        write_marker(task, teacher, fold, f"no data (train {len(train_rows)}, val {len(val_rows)})")
        return {}
    aug = ti.seeded(Augment2D(pre, seed=params.run.seed))
    train_set = ti.image_dataset(train_rows, "image_path", train_rows["y"].tolist(), aug)
    val_set = ti.image_dataset(val_rows, "image_path", val_rows["y"].tolist())
    model = ti.build_classifier(teacher, params.models, task, pre)
    logger = EpochLogger(prefix=f"{task}/f{fold}/")
    result = train(
        model, train_set, val_set, optim=params.train.classifier, run=params.run, class_weights=params.train.class_weights,
        keep=params.train.keep, lambda_aux=params.models.cnncf.lambda_aux, positive_index=ti.POSITIVE,
        checkpoint_dir=checkpoint_dir(Path("build/checkpoints/teachers") / task / f"{teacher}-f{fold}", params, ti.SPLITS, ti.PROCESSED / "index.parquet"),
        callback=logger,
    )  # fmt: skip
    model.load_state_dict(result.state_dict)
    for warning in result.warnings:
        log.warning("%s %s fold %d: %s", task, teacher, fold, warning)
    probs = ti.predict(model, val_set)
    oof = pd.DataFrame({"record_id": val_rows["record_id"].values, "task": task, "teacher": teacher, "fold": fold,
                        "label": val_rows["label"].values, "y": val_rows["y"].values})  # fmt: skip
    for i, c in enumerate(ti.task_classes(task)):
        oof[f"p_{c}"] = probs[:, i]
    model_path, oof_path = out_paths(task, teacher, fold)
    save_model(model, model_path, extra={"history": result.history, "gate_opened": result.gate_opened, "fold": fold})
    oof[oof_columns(task)].to_parquet(oof_path, index=False)
    log_loss_curve({f"{teacher}-f{fold}": result.history}, f"figures/{task}_loss.png")
    fold_auroc = auroc_exact((oof["y"] == ti.POSITIVE).to_numpy(), oof[f"p_{ti.CLASSES[ti.POSITIVE]}"].to_numpy())
    summary = {"fold_auroc": fold_auroc, "gate_opened": float(bool(result.gate_opened)), "n_train": len(train_rows), "n_val": len(val_rows)}
    log.info("%s %s fold %d: AUROC %.3f (train %d, val %d)", task, teacher, fold, fold_auroc, len(train_rows), len(val_rows))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--fold", type=int, action="append", default=None,
                        help="train only this fold (repeatable); default: every fold 0-4, unconfigured ones write markers")
    args = parser.parse_args(argv)

    from covidscan.errors import ConfigError

    params = load_stage_params("train_teacher")
    if args.teacher not in params.models.teacher_archs:
        raise ConfigError(f"--teacher {args.teacher}: not among models.teacher_archs {sorted(params.models.teacher_archs)}")
    from covidscan.tracking.runs import log_metrics, log_peak_rss, stage_run

    folds = args.fold if args.fold is not None else list(range(MAX_FOLDS))
    index = splits = None
    with stage_run(f"train_teacher@{args.teacher}", params.train, experiment=params.run.experiment_name, tags={"teacher": args.teacher}):
        for fold in folds:
            if fold >= params.splits.n_folds or fold < 0:
                for task in ti.TASKS:
                    write_marker(task, args.teacher, fold, "fold not configured")
                log.info("fold not configured: --fold %d with splits.n_folds=%d", fold, params.splits.n_folds)
                continue
            if index is None:
                index, splits = ti.load_tables()
            for task in ti.TASKS:
                summary = train_task(task, args.teacher, fold, ti.task_rows(index, splits, task), params)
                log_metrics({f"{task}/f{fold}/{k}": v for k, v in summary.items()})
        log_metrics({"folds_configured": float(sum(0 <= f < params.splits.n_folds for f in folds))})
        log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
