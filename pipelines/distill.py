"""DVC stage `distill`: the student per 2D task, distilled from the teachers, plus a no-KD control.

    python -m pipelines.distill [--val-fold 0]

For each task (``xray``, ``ct``; three classes, see pipelines.training_inputs) the student (CNNCF with
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
``models/student-<task>.pt``, ``metrics/distill.json`` (student vs no-KD validation AUROC per task)
and logs + registers ``covidscan-student-<task>`` in MLflow with the data version (the ingest
manifest's sha256, first 16 hex digits).

Note: the teachers of folds != k saw the internal validation fold during their own training, so the
student's validation AUROC is slightly optimistic; the test part is untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path


from pipelines import load_stage_params, stage_main
from pipelines import training_inputs as ti

log = logging.getLogger("pipelines.distill")

METRICS = Path("metrics/distill.json")


def load_teachers(task: str, names: list[str], cv: dict) -> tuple[dict, dict, dict]:
    """teacher -> fold models (non-empty files, fold order), teacher -> their fold AUROCs (NaN -> 0.5),
    teacher -> their fold numbers."""
    from covidscan.models.zoo import load_model

    models: dict[str, list] = {}
    aurocs: dict[str, list[float]] = {}
    folds: dict[str, list[int]] = {}
    for name in names:
        info = cv.get(task, {}).get(name, {})
        by_fold = dict(zip(info.get("folds", []), info.get("fold_auroc", [])))
        for path in sorted((ti.TEACHERS_DIR / task).glob(f"{name}-f*.pt"), key=lambda p: int(p.stem.rsplit("-f", 1)[1])):
            if path.stat().st_size == 0:
                continue  # marker of an unconfigured fold
            fold = int(path.stem.rsplit("-f", 1)[1])
            models.setdefault(name, []).append(load_model(path))
            folds.setdefault(name, []).append(fold)
            value = by_fold.get(fold)
            aurocs.setdefault(name, []).append(0.5 if value is None or not math.isfinite(value) else float(value))
    return models, aurocs, folds


def train_student(task: str, rows, val_fold: int, params, teachers) -> tuple[object, dict, list]:
    """Train one student (with ``teachers`` or without: None); returns model, summary, history."""
    from covidscan.evaluation.curves import auroc_exact
    from covidscan.preprocess.augment import Augment2D
    from covidscan.training.loop import train
    from covidscan.training.tasks import build_classifier
    from covidscan.tuning.tuned import tuned_params

    params = tuned_params(params, f"student-{task}")  # unchanged unless tune.use_tuned (tune.tuned is filled)
    pre = params.preprocess
    train_rows, val_rows = rows[rows["fold"] != val_fold], rows[rows["fold"] == val_fold]
    aug = ti.seeded(Augment2D(pre, seed=params.run.seed))
    train_set = ti.image_dataset(train_rows, "image_path", train_rows["y"].tolist(), aug)
    val_set = ti.image_dataset(val_rows, "image_path", val_rows["y"].tolist())
    model = build_classifier("student", params.models, task, pre)
    kind = "kd" if teachers is not None else "nokd"
    logger = ti.EpochLogger(prefix=f"{task}/{kind}/")
    result = train(
        model, train_set, val_set, optim=params.train.classifier, run=params.run, class_weights=params.train.class_weights,
        keep=params.train.keep, lambda_aux=params.models.cnncf.lambda_aux, positive_index=ti.POSITIVE,
        teachers=teachers, distill=params.train.distill, callback=logger,
    )  # fmt: skip
    model.load_state_dict(result.state_dict)
    for warning in result.warnings:
        log.warning("%s %s: %s", task, kind, warning)
    probs = ti.predict(model, val_set)
    is_pos = (val_rows["y"] == ti.POSITIVE).to_numpy()
    score = probs[:, ti.POSITIVE]
    summary = {"val_auroc": auroc_exact(is_pos, score), "gate_opened": bool(result.gate_opened), "n_train": len(train_rows), "n_val": len(val_rows)}
    model.val_data = (is_pos, score, ti.example_batch(val_set, 1))  # type: ignore[attr-defined]
    return model, summary, result.history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val-fold", type=int, default=0, help="the train-val fold held out for the gate and the threshold")
    args = parser.parse_args(argv)

    from covidscan.errors import DataError
    from covidscan.models.zoo import save_model
    from covidscan.tracking.registry import log_model
    from covidscan.tracking.runs import log_metrics, stage_run
    from covidscan.training.distill import TeacherEnsemble, usable_teachers

    from covidscan.tuning.tuned import tuned_params

    params = load_stage_params("distill")  # written by configure_tuned: tune.use_tuned already applied (params/tuned.yaml)
    cv_path = ti.TEACHERS_DIR / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else {}
    data_version = ti.manifest_digest()
    index, splits = ti.load_tables()
    report: dict[str, dict] = {}
    with stage_run("distill", params.train, experiment=params.run.experiment_name, tags={"data_version": data_version}):
        for task in ti.TASKS:
            rows = ti.task_rows(index, splits, task)
            if rows[rows["fold"] != args.val_fold].empty or rows[rows["fold"] == args.val_fold].empty:
                raise DataError(f"task {task}: no train-val records for training or for validation fold {args.val_fold} (data/splits)")
            models, aurocs, folds = load_teachers(task, list(params.models.teachers), cv)
            if not models:
                raise DataError(f"task {task}: no teacher fold models under {ti.TEACHERS_DIR / task} (run train_teacher first)")
            usable, usable_aurocs, closed = usable_teachers(models, aurocs)
            left_out = [f"{name}-f{folds[name][i]}" for name, i in closed]
            if left_out:
                log.warning("%s: teacher fold models whose Control Gate Block never opened, left out of the soft labels: %s", task, ", ".join(left_out))
            if usable:
                ensemble = TeacherEnsemble(usable, tuned_params(params, f"student-{task}").train.distill, usable_aurocs)  # the student's T
                student, kd, kd_hist = train_student(task, rows, args.val_fold, params, ensemble)
                _, nokd, nokd_hist = train_student(task, rows, args.val_fold, params, None)
            else:
                log.warning("%s: no teacher fold model opened its Control Gate Block; the student trains on the hard labels only (no distillation)", task)
                student, kd, kd_hist = train_student(task, rows, args.val_fold, params, None)
                nokd, nokd_hist = kd, kd_hist  # the same run: the student is its own no-KD control
            is_pos, score, example = student.val_data  # type: ignore[attr-defined]
            del student.val_data  # type: ignore[attr-defined]
            point = ti.set_operating_threshold(student, is_pos, score, params.evaluate, f"student-{task}")
            threshold = point.threshold
            path = save_model(student, Path("models") / f"student-{task}.pt", extra={"val_auroc": kd["val_auroc"], "data_version": data_version,
                                                                                      "teachers": {k: len(v) for k, v in models.items()}})  # fmt: skip
            ti.log_loss_curve({"KD": kd_hist, "no KD": nokd_hist}, f"figures/{task}_loss.png")
            report[task] = {
                "student_val_auroc": kd["val_auroc"], "no_kd_val_auroc": nokd["val_auroc"], "threshold": threshold,
                "threshold_rule": point.rule, "threshold_note": point.note, "gate_opened": kd["gate_opened"], "n_train": kd["n_train"], "n_val": kd["n_val"],
                "teachers": {k: len(v) for k, v in models.items()}, "teachers_used": {k: len(v) for k, v in usable.items()},
                "teachers_left_out": left_out, "distilled": bool(usable),
            }  # fmt: skip
            log_metrics({f"{task}/student_val_auroc": kd["val_auroc"], f"{task}/no_kd_val_auroc": nokd["val_auroc"], f"{task}/threshold": threshold})
            log_model(
                student, f"student-{task}", example, registered_name=f"covidscan-student-{task}", data_version=data_version, preprocess=params.preprocess,
                checkpoint={"state_dict": student.state_dict(), "config": student.card.build},
            )  # fmt: skip
            log.info("%s: student val AUROC %.3f vs no-KD %.3f; threshold %.3f -> %s", task, kd["val_auroc"], nokd["val_auroc"], threshold, path)
        METRICS.parent.mkdir(parents=True, exist_ok=True)
        clean = json.loads(json.dumps(report, default=float).replace("NaN", "null"))
        METRICS.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
        ti.log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
