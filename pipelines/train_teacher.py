"""DVC stage `train_teacher@<TS>`: one teacher (TS1..TS4), every cross-validation fold, both 2D tasks.

    python -m pipelines.train_teacher --teacher TS1 [--fold 0 ...] [--processed data/processed]
        [--splits data/splits/splits.parquet] [--out models/teachers] [--checkpoints build/checkpoints/teachers]

One process per teacher trains its folds one after the other (a process per fold cost ~7 s of
start-up each, 20 times per repro). For each fold k and task (``xray``: XMDS train-val, ``ct``: CTMDS
train-val CT stacks; the task's classes, see covidscan.training.tasks) the teacher trains on folds != k
and validates on fold k (:func:`covidscan.training.teacher.train_teacher_fold`), writing
``<out>/<task>/<TS>-f<k>.pt`` and ``<out>/<task>/<TS>-f<k>.oof.parquet``. A fold index >=
``splits.n_folds`` (or a task without data) writes empty marker files (a 0-byte .pt and an empty table)
and logs "fold not configured". Params: ``run``, ``models``, ``preprocess`` (augmentation),
``train.classifier``, ``train.class_weights``, ``train.keep``.

Data-parallel: under ``torchrun --nproc-per-node N -m pipelines.train_teacher ...`` (or with
``run.distributed.nproc_per_node`` > 1, which relaunches the stage under torchrun) every rank trains
each fold on its shard (covidscan.training.distributed); rank 0 alone logs to MLflow and writes the
checkpoints and outputs, and a torchrun restart resumes each fold from its newest checkpoint.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.train_teacher")

MAX_FOLDS = 5  # dvc.yaml declares the outputs of folds 0-4 (the paper's 5-fold CV); unconfigured folds write markers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--fold", type=int, action="append", default=None,
                   help="train only this fold (repeatable); default: every fold 0-4, unconfigured ones write markers")  # fmt: skip
    add_path_options(p, "processed", "splits")
    p.add_argument("--out", type=Path, default=layout.TEACHERS, help="the teachers' folder (<task>/<TS>-f<k>.pt, .oof.parquet)")
    p.add_argument("--checkpoints", type=Path, default=layout.CHECKPOINTS / "teachers", help="resumable checkpoints")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from covidscan.errors import ConfigError
    from covidscan.training.tasks import TASKS, load_tables, task_rows
    from covidscan.training.teacher import train_teacher_fold, write_marker

    params = load_stage_params("train_teacher")
    from covidscan.training.distributed import is_main_process, relaunch_under_torchrun

    if (code := relaunch_under_torchrun(params.run.distributed, "pipelines.train_teacher", argv)) is not None:
        raise SystemExit(code)
    if args.teacher not in params.models.teacher_archs:
        raise ConfigError(f"--teacher {args.teacher}: not among models.teacher_archs {sorted(params.models.teacher_archs)}")
    from covidscan.tracking.runs import EpochLogger, log_loss_curve, log_metrics, log_peak_rss, stage_run

    folds = args.fold if args.fold is not None else list(range(MAX_FOLDS))
    index = splits = None
    with stage_run(f"train_teacher@{args.teacher}", params.train, experiment=params.run.experiment_name, tags={"teacher": args.teacher}):
        for fold in folds:
            if fold >= params.splits.n_folds or fold < 0:
                for task in TASKS:
                    if is_main_process():
                        write_marker(args.out, task, args.teacher, fold, "fold not configured")
                log.info("fold not configured: --fold %d with splits.n_folds=%d", fold, params.splits.n_folds)
                continue
            if index is None:
                index, splits = load_tables(args.processed, args.splits)
            for task in TASKS:
                trained = train_teacher_fold(
                    task, args.teacher, fold, task_rows(index, splits, task), params, processed=args.processed, splits=args.splits,
                    out_dir=args.out, checkpoints=args.checkpoints, callback=EpochLogger(prefix=f"{task}/f{fold}/"),
                )  # fmt: skip
                if trained is not None:
                    log_loss_curve({f"{args.teacher}-f{fold}": trained.history}, f"figures/{task}_loss.png")
                    log_metrics({f"{task}/f{fold}/{k}": v for k, v in trained.summary().items()})
        log_metrics({"folds_configured": float(sum(0 <= f < params.splits.n_folds for f in folds))})
        log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
