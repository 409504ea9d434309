"""DVC stage `distill`: the student per 2D task, distilled from the teachers, plus a no-KD control.

    python -m pipelines.distill [--val-fold 0] [--processed data/processed] [--splits data/splits/splits.parquet]
        [--ingest data/interim/ingest] [--teachers models/teachers] [--models-dir models] [--metrics metrics/distill.json]
        [--checkpoints build/checkpoints/students]

For each task (``xray``, ``ct``, ``ct-slice``; their classes, see covidscan.training.tasks) the student (CNNCF with
the ``models.cnncf`` defaults, or with ``tune.use_tuned`` the task's tuned architecture, learning rate,
weight decay, KD alpha/T and gate thresholds from ``params/tuned.yaml``) trains on the train-val part minus an internal validation fold
(``--val-fold``, default 0; the Control Gate Block opens on it) from the hard labels and the fused
teacher probabilities (covidscan.training.distill.TeacherEnsemble over every non-empty
``models/teachers/<task>/<TS>-f<k>.pt``; ``train.distill`` alpha, T, fusion, teacher mode; fold
AUROCs from ``models/teachers/cv.json``), computed online on the same augmented batch. The same
student without distillation trains on the same split with the same seed, for comparison.

A teacher fold model whose Control Gate Block never opened (untrained stage II and head) is left out
of the fused soft labels (covidscan.training.distill.usable_teachers), with a warning and its name under
``teachers_left_out`` in ``metrics/distill.json``; when no teacher fold model is usable the student
trains on the hard labels only (``distilled: false``; it is then its own no-KD control).

The operating threshold is chosen on the internal validation fold (covid19 vs rest) by
``evaluate.threshold_rule`` (covidscan.evaluation.summary.operating_point; default: the highest
specificity with sensitivity >= ``evaluate.min_sensitivity``; ``fixed`` -> ``evaluate.threshold``) and
stored on the model. Writes
``models/student-<task>.pt``, ``metrics/distill.json`` (student vs no-KD validation AUROC per task; a task
without train-val records writes an empty ``student-<task>.pt`` and ``{"skipped": true, "why": ...}``)
and logs + registers ``covidscan-student-<task>`` in MLflow with the data version (the ingest
manifest's sha256, first 16 hex digits).

Note: the teachers of folds != k saw the internal validation fold during their own training, so the
student's validation AUROC is slightly optimistic; the test part is untouched.

Data-parallel: under torchrun (or ``run.distributed.nproc_per_node`` > 1) every rank trains the students
on its shard of each batch and runs the teachers on that shard (covidscan.training.distributed); rank 0
alone chooses the threshold, writes the outputs and logs to MLflow. Each student run writes resumable
checkpoints under ``--checkpoints`` (``<task>/<kd|nokd>/f<val-fold>/<digest of params, data and teachers>``),
so a rerun, or a torchrun restart after a rank died, resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.distill")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val-fold", type=int, default=0, help="the train-val fold held out for the gate and the threshold")
    add_path_options(p, "processed", "splits", "ingest", "teachers")
    p.add_argument("--models-dir", type=Path, default=layout.MODELS, help="where student-<task>.pt is written")
    p.add_argument("--metrics", type=Path, default=layout.METRICS / "distill.json", help="the DVC metrics file")
    p.add_argument("--checkpoints", type=Path, default=layout.CHECKPOINTS / "students", help="resumable checkpoints")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from covidscan.errors import DataError
    from covidscan.models.zoo import save_model, write_empty_model
    from covidscan.tracking.registry import log_model
    from covidscan.tracking.runs import EpochLogger, data_version as manifest_version, log_loss_curve, log_metrics, log_peak_rss, stage_run
    from covidscan.training.checkpoint import checkpoint_dir
    from covidscan.training.distill import TeacherEnsemble, load_teacher_folds, usable_teachers
    from covidscan.training.student import train_student
    from covidscan.training.tasks import TASKS, load_tables, task_rows
    from covidscan.training.threshold import set_operating_threshold
    from covidscan.tuning.tuned import tuned_params

    params = load_stage_params("distill")  # written by configure_tuned: tune.use_tuned already applied (params/tuned.yaml)
    from covidscan.training.distributed import is_main_process, relaunch_under_torchrun

    if (code := relaunch_under_torchrun(params.run.distributed, "pipelines.distill", argv)) is not None:
        raise SystemExit(code)
    main_rank = is_main_process()
    cv_path = args.teachers / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else {}
    data_version = manifest_version(args.ingest / "manifest.parquet")
    index, splits = load_tables(args.processed, args.splits)
    report: dict[str, dict] = {}
    with stage_run("distill", params.train, experiment=params.run.experiment_name, tags={"data_version": data_version}):
        for task in TASKS:
            rows = task_rows(index, splits, task)
            n_train, n_val = int((rows["fold"] != args.val_fold).sum()), int((rows["fold"] == args.val_fold).sum())
            if not n_train or not n_val:  # e.g. no CT slices among the sources: an explicit empty output, not a failure
                why = f"sub-dataset {TASKS[task]['subset']}: {n_train} train-val records for training, {n_val} in validation fold {args.val_fold}"
                if not main_rank:
                    continue
                path = write_empty_model(args.models_dir / f"student-{task}.pt")
                report[task] = {"skipped": True, "why": why}
                log.warning("%s: no student trained (%s); wrote an empty %s", task, why, path)
                continue
            teachers = load_teacher_folds(args.teachers / task, list(params.models.teachers), cv.get(task, {}))
            models, folds = teachers.models, teachers.folds
            if not models:
                raise DataError(f"task {task}: no teacher fold models under {args.teachers / task} (run train_teacher first)")
            usable, usable_aurocs, closed = usable_teachers(models, teachers.aurocs)
            left_out = [f"{name}-f{folds[name][i]}" for name, i in closed]
            if left_out:
                log.warning("%s: teacher fold models whose Control Gate Block never opened, left out of the soft labels: %s", task, ", ".join(left_out))
            student_params = tuned_params(params, f"student-{task}")  # unchanged unless tune.use_tuned (tune.tuned is filled)
            data = (args.splits, args.processed / "index.parquet", *sorted((args.teachers / task).glob("*.pt")), cv_path)

            def ckpt(kind: str, student_params=student_params, task=task, data=data) -> Path:
                return checkpoint_dir(args.checkpoints / task / kind / f"f{args.val_fold}", student_params, *data)

            if usable:
                ensemble = TeacherEnsemble(usable, student_params.train.distill, usable_aurocs)  # the student's T
                kd = train_student(task, rows, args.val_fold, student_params, ensemble, root=args.processed, callback=EpochLogger(prefix=f"{task}/kd/"),
                                   checkpoints=ckpt("kd"))  # fmt: skip
                nokd = train_student(task, rows, args.val_fold, student_params, None, root=args.processed, callback=EpochLogger(prefix=f"{task}/nokd/"),
                                     checkpoints=ckpt("nokd"))  # fmt: skip
            else:
                log.warning("%s: no teacher fold model opened its Control Gate Block; the student trains on the hard labels only (no distillation)", task)
                kd = train_student(task, rows, args.val_fold, student_params, None, root=args.processed, callback=EpochLogger(prefix=f"{task}/nokd/"),
                                   checkpoints=ckpt("nokd"))  # fmt: skip
                nokd = kd  # the same run: the student is its own no-KD control
            if not main_rank:  # trained its shards; rank 0 alone chooses the threshold, writes and logs
                continue
            student = kd.model
            point = set_operating_threshold(student, kd.val_positive, kd.val_score, params.evaluate, f"student-{task}")
            threshold = point.threshold
            path = save_model(student, args.models_dir / f"student-{task}.pt", extra={"val_auroc": kd.val_auroc, "data_version": data_version,
                                                                                      "teachers": {k: len(v) for k, v in models.items()}})  # fmt: skip
            log_loss_curve({"KD": kd.history, "no KD": nokd.history}, f"figures/{task}_loss.png")
            report[task] = {
                "student_val_auroc": kd.val_auroc, "no_kd_val_auroc": nokd.val_auroc, "threshold": threshold,
                "threshold_rule": point.rule, "threshold_note": point.note, "gate_opened": kd.gate_opened, "n_train": kd.n_train, "n_val": kd.n_val,
                "teachers": {k: len(v) for k, v in models.items()}, "teachers_used": {k: len(v) for k, v in usable.items()},
                "teachers_left_out": left_out, "distilled": bool(usable),
            }  # fmt: skip
            log_metrics({f"{task}/student_val_auroc": kd.val_auroc, f"{task}/no_kd_val_auroc": nokd.val_auroc, f"{task}/threshold": threshold})
            log_model(
                student, f"student-{task}", kd.example, registered_name=f"covidscan-student-{task}", data_version=data_version, preprocess=params.preprocess,
                checkpoint={"state_dict": student.state_dict(), "config": student.card.build},
            )  # fmt: skip
            log.info("%s: student val AUROC %.3f vs no-KD %.3f; threshold %.3f -> %s", task, kd.val_auroc, nokd.val_auroc, threshold, path)
        if not main_rank:
            return
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        clean = json.loads(json.dumps(report, default=float).replace("NaN", "null"))
        args.metrics.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
        log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
