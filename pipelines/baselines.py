"""DVC stage `baselines`: Yao et al. 2021's baselines on the CSAC-Net split -> test AUROCs.

    python -m pipelines.baselines [--val-fold 0] [--grid 8] [--bins 16]

On the same CSDS centre-held-out split as train_csacnet (train = training centres minus the
validation fold, test = the held-out centres):

- MONAI's 3D ResNet (zoo ``resnet3d``), trained like CSAC-Net (``train.csacnet``, Augment3D), its
  operating threshold chosen on the validation subset by ``evaluate.threshold_rule`` and stored on its card;
- an SVM (RBF, ``C=1``, ``gamma="scale"``, balanced class weights) and a random forest (100 trees,
  balanced class weights, ``run.seed``) from scikit-learn, on simple volume features
  (:func:`covidscan.models.baselines.volume_features`): the volume average-pooled to ``--grid``^3 plus a
  ``--bins``-bin intensity histogram on [0, 1].

Writes ``models/baselines/resnet3d.pt`` (zoo.save_model), ``svm.joblib``, ``random_forest.joblib``
(scikit-learn estimators; joblib pickles: load only files you made), ``features.json`` (the feature
settings) and ``metrics/baselines.json`` (test AUROC per model; null when the test part lacks a class).
The evaluate stage of experiment S scores the same files on S's test volumes, with bootstrap CIs, next to
CSAC-Net (``comparison`` in ``metrics/evaluate/S.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

from pipelines import load_stage_params, stage_main
from pipelines import training_inputs as ti

log = logging.getLogger("pipelines.baselines")

OUT_DIR = Path("models/baselines")
METRICS = Path("metrics/baselines.json")


def _volumes(dataset):
    return (dataset[i][0] for i in range(len(dataset)))


def _clean(v: float) -> float | None:
    return None if not math.isfinite(v) else round(float(v), 6)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val-fold", type=int, default=0)
    parser.add_argument("--grid", type=int, default=8, help="pooled volume size per axis for the SVM/RF features")
    parser.add_argument("--bins", type=int, default=16, help="intensity histogram bins for the SVM/RF features")
    args = parser.parse_args(argv)

    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from covidscan.evaluation.curves import auroc_exact
    from covidscan.models.baselines import classic_scores, save_feature_settings, volume_features
    from covidscan.models.zoo import save_model
    from covidscan.tracking.runs import EpochLogger, log_artifact, log_loss_curve, log_metrics, log_peak_rss, stage_run
    from covidscan.training.threshold import set_operating_threshold
    from covidscan.training.volume import train_volume_model, volume_split

    params = load_stage_params("baselines")
    index, splits = ti.load_tables()
    train_rows, val_rows, test_rows = volume_split(index, splits, args.val_fold)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    result: dict[str, dict] = {}
    with stage_run("baselines", params.train.csacnet, experiment=params.run.experiment_name, tags={"data_version": ti.manifest_digest()}):
        model, trained = train_volume_model("resnet3d", params, train_rows, val_rows, root=ti.PROCESSED, callback=EpochLogger("resnet3d/"))
        point = set_operating_threshold(model, val_rows["y"].to_numpy(), ti.predict(model, ti.volume_dataset(val_rows))[:, 1],
                                        params.evaluate, "resnet3d")  # fmt: skip
        save_model(model, OUT_DIR / "resnet3d.pt", extra={"history": trained.history, "threshold_rule": point.rule, "threshold_note": point.note})
        log_loss_curve({"3D ResNet": trained.history}, "figures/resnet3d_loss.png")
        test_set = ti.volume_dataset(test_rows)
        y_test = test_rows["y"].to_numpy()
        scores = {"resnet3d": ti.predict(model, test_set)[:, 1] if len(test_set) else np.zeros(0)}

        x_train = volume_features(_volumes(ti.volume_dataset(train_rows)), args.grid, args.bins)
        x_test = volume_features(_volumes(test_set), args.grid, args.bins)
        save_feature_settings(OUT_DIR, args.grid, args.bins)
        y_train = train_rows["y"].to_numpy()
        classic = {
            "svm": make_pipeline(StandardScaler(), SVC(C=1.0, kernel="rbf", gamma="scale", class_weight="balanced")),
            "random_forest": RandomForestClassifier(n_estimators=100, class_weight="balanced", random_state=params.run.seed, n_jobs=1),
        }
        for name, estimator in classic.items():
            if len(np.unique(y_train)) < 2:
                log.warning("%s: the training part has one class; skipped", name)
                continue
            estimator.fit(x_train, y_train)
            joblib.dump(estimator, OUT_DIR / f"{name}.joblib")
            if len(x_test):
                scores[name] = classic_scores(estimator, x_test)
        for name, score in scores.items():
            auroc = auroc_exact(y_test, score) if len(score) else float("nan")
            result[name] = {"test_auroc": _clean(auroc), "n_test": int(len(y_test)), "n_test_positive": int(y_test.sum())}
            log_metrics({f"{name}/test_auroc": auroc})
            log.info("%s: test AUROC %s (%d test volumes)", name, result[name]["test_auroc"], len(y_test))
        METRICS.parent.mkdir(parents=True, exist_ok=True)
        METRICS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        log_artifact(METRICS, "metrics")
        log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
