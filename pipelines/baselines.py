"""DVC stage `baselines`: Yao et al. 2021's baselines on the CSAC-Net split -> test AUROCs.

    python -m pipelines.baselines [--val-fold 0] [--grid 8] [--bins 16] [--processed data/processed]
        [--splits data/splits/splits.parquet] [--ingest data/interim/ingest] [--out models/baselines]
        [--metrics metrics/baselines.json]

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

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.baselines")


def _volumes(dataset):
    return (dataset[i][0] for i in range(len(dataset)))


def _clean(v: float) -> float | None:
    return None if not math.isfinite(v) else round(float(v), 6)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val-fold", type=int, default=0)
    p.add_argument("--grid", type=int, default=8, help="pooled volume size per axis for the SVM/RF features")
    p.add_argument("--bins", type=int, default=16, help="intensity histogram bins for the SVM/RF features")
    add_path_options(p, "processed", "splits", "ingest")
    p.add_argument("--out", type=Path, default=layout.MODELS / "baselines", help="the baselines' folder")
    p.add_argument("--metrics", type=Path, default=layout.METRICS / "baselines.json", help="the DVC metrics file")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from covidscan.errors import NoTrainingData
    from covidscan.evaluation.curves import auroc_exact
    from covidscan.models.baselines import classic_scores, save_feature_settings, volume_features
    from covidscan.models.zoo import save_model
    from covidscan.tracking.runs import EpochLogger, data_version, log_artifact, log_loss_curve, log_metrics, log_peak_rss, stage_run
    from covidscan.training.tasks import load_tables, predict
    from covidscan.training.threshold import set_operating_threshold
    from covidscan.training.volume import train_volume_model, volume_dataset, volume_split

    params = load_stage_params("baselines")
    index, splits = load_tables(args.processed, args.splits)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        train_rows, val_rows, test_rows = volume_split(index, splits, args.val_fold)
    except NoTrainingData as err:  # no CT volumes among the sources: an empty folder and the reason, not a failure
        log.warning("no baseline trained (%s); %s is empty", err, out)
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps({"skipped": True, "why": str(err)}, indent=2) + "\n")
        return
    result: dict[str, dict] = {}
    digest = data_version(args.ingest / "manifest.parquet")
    with stage_run("baselines", params.train.csacnet, experiment=params.run.experiment_name, tags={"data_version": digest}):
        model, trained = train_volume_model("resnet3d", params, train_rows, val_rows, root=args.processed, callback=EpochLogger("resnet3d/"))
        point = set_operating_threshold(model, val_rows["y"].to_numpy(), predict(model, volume_dataset(val_rows, root=args.processed))[:, 1],
                                        params.evaluate, "resnet3d")  # fmt: skip
        save_model(model, out / "resnet3d.pt", extra={"history": trained.history, "threshold_rule": point.rule, "threshold_note": point.note})
        log_loss_curve({"3D ResNet": trained.history}, "figures/resnet3d_loss.png")
        test_set = volume_dataset(test_rows, root=args.processed)
        y_test = test_rows["y"].to_numpy()
        scores = {"resnet3d": predict(model, test_set)[:, 1] if len(test_set) else np.zeros(0)}

        x_train = volume_features(_volumes(volume_dataset(train_rows, root=args.processed)), args.grid, args.bins)
        x_test = volume_features(_volumes(test_set), args.grid, args.bins)
        save_feature_settings(out, args.grid, args.bins)
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
            joblib.dump(estimator, out / f"{name}.joblib")
            if len(x_test):
                scores[name] = classic_scores(estimator, x_test)
        for name, score in scores.items():
            auroc = auroc_exact(y_test, score) if len(score) else float("nan")
            result[name] = {"test_auroc": _clean(auroc), "n_test": int(len(y_test)), "n_test_positive": int(y_test.sum())}
            log_metrics({f"{name}/test_auroc": auroc})
            log.info("%s: test AUROC %s (%d test volumes)", name, result[name]["test_auroc"], len(y_test))
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        log_artifact(args.metrics, "metrics")
        log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
