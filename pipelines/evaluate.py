"""DVC stage `evaluate@<experiment>`: a saved model on an experiment's test set (SPEC.md section 5).

    python -m pipelines.evaluate --experiment A [--params params.yaml] [--models-dir models]

Reads ``models/<experiment.model>.pt``, ``data/processed``, ``data/splits/splits.parquet`` and
``data/interim/ingest`` (manifest, reads, annotations, clinical). Writes ``metrics/evaluate/<exp>.json``
(flat, for ``dvc metrics show``), ``reports/evaluate/<exp>/roc.csv`` + ``pr.csv`` (``dvc plots``), the
figures (``reports/evaluate/<exp>/figures/``) and ``reports/evaluate/<exp>/model_card.html``; everything is logged to the MLflow run
``evaluate@<exp>``.

Classifiers (experiments A, B, C, S ...): indices at the model's operating threshold with bootstrap CIs,
ROC/PR, readers and McNemar, calibration, per-source/per-centre breakdowns, seed 004's subsets (only for
experiments on the centre-held-out sub-datasets, ``splits.centre_subsets``) and thresholds table,
per-volume time, the source-shortcut probe, the confound check (``confound``: the label named by the source
or centre for at least ``evaluate.confound_purity`` of the cases; a warning at the top of the card),
Grad-CAM overlays and DBSCAN centres vs the adjudicated expert boxes. An experiment with ``baselines``
(S) also scores the baselines stage's models (``models/<baselines>/``) on the same cases:
``comparison.<model>`` (AUROC, sensitivity, specificity with CIs, threshold, n) and a card table.
Three-class experiments (R-*): one-vs-rest + macro. A ``cnnrf`` model: the regression indices of the
five clinical indicators (normalised with the model card's training range),
each indicator's r against the critical r for n = test cases, and the pooled r labelled ``pooled``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covidscan.config import PARAMS_FILE, EvaluateConfig, ExperimentSpec, Params, load_params
from covidscan.errors import ConfigError, CovidscanError, DataError
from pipelines import stage_main

log = logging.getLogger("pipelines.evaluate")

PROCESSED = Path("data/processed")
SPLITS = Path("data/splits/splits.parquet")
INGEST = Path("data/interim/ingest")
GROUND_TRUTH = Path("data/raw/synthetic/ground_truth.json")


# ---------------------------------------------------------------------------------- helpers
def _read(path: Path, required: bool = True) -> pd.DataFrame:
    if not path.is_file():
        if required:
            raise DataError(f"{path}: not found (run the upstream stages first)")
        return pd.DataFrame()
    return pd.read_parquet(path)


def _reads_for(records: pd.DataFrame, reads: pd.DataFrame) -> dict[str, np.ndarray]:
    """Reader -> calls aligned with the records (only readers who read every case)."""
    if reads.empty:
        return {}
    out = {}
    for reader, grp in reads.groupby("reader"):
        calls = grp.set_index("record_id")["read"]
        if records["record_id"].isin(calls.index).all():
            out[str(reader)] = calls.loc[records["record_id"]].to_numpy().astype(int)
    return out


def _shortcut(records: pd.DataFrame, features: np.ndarray, cfg: EvaluateConfig, seed: int, disease_auroc: float | None) -> list[dict[str, Any]]:
    """Source/centre predictability from the images (thumbnails, histograms) and from the model's features."""
    from covidscan.explain.shortcut import histogram_features, pixel_features, shortcut_table

    images = [np.load(PROCESSED / (r["grey_path"] or r["image_path"])) for _, r in records.iterrows()]
    sets = {"pixels 16x16": pixel_features(images), "histogram": histogram_features(images), "model features": features}
    targets = {"source": records["source"].astype(str).to_numpy(), "centre": records["centre"].astype(str).to_numpy()}
    try:
        return shortcut_table(sets, targets, disease_auroc=disease_auroc, disease_n=len(records), n_splits=cfg.shortcut_folds, seed=seed)
    except DataError as err:
        log.warning("shortcut probe skipped: %s", err)
        return [{"note": f"not computed: {err}"}]


def _expert_centres(row: pd.Series, boxes: pd.DataFrame, dims: int, pre) -> np.ndarray:
    """Adjudicated box centres normalised to the model input: (x, y) for 2D, (z, y, x) for a volume.

    A box's slice goes through :func:`covidscan.preprocess.ct.volume_slice_index`, the z mapping of the
    volume preprocessing itself (5 mm resampling, then crop/pad to ``volume_slices``).
    """
    from covidscan.explain.centres import box_centres

    b = boxes[["x0", "y0", "x1", "y1"]].to_numpy(float)
    xy = box_centres(b, (int(row["rows"]), int(row["cols"])))  # resizing keeps normalised centres
    if dims == 2:
        return xy
    from covidscan.preprocess.ct import volume_slice_index

    z = volume_slice_index(boxes["slice_index"].to_numpy(float), int(row["n_slices"]), float(row["spacing_slice"]), pre)
    return np.stack([z / pre.volume_slices, xy[:, 1], xy[:, 0]], axis=1)


def _grad_cams(model, records: pd.DataFrame, annotations: pd.DataFrame, params: Params, out_dir: Path, max_cases: int | None) -> tuple[dict[str, Path], dict[str, Any]]:
    """Grad-CAM overlays of (a sample of) the test cases and the DBSCAN-centre agreement with the experts."""
    from covidscan.evaluation.experiment import load_input
    from covidscan.explain.centres import agreement_over_cases, heatmap_centres
    from covidscan.explain.gradcam import grad_cam, save_overlay_png

    cfg, pre = params.evaluate, params.preprocess
    kind = model.card.input_spec.kind
    dims = 3 if kind == "ct_volume" else 2
    layer = getattr(model, "target_layer", None)
    if layer is None:
        return {}, {}
    adjudicated = annotations[annotations["reader"] == "adjudicated"] if not annotations.empty else annotations
    chosen = records if max_cases is None else records.head(max_cases)
    figures: dict[str, Path] = {}
    cases = []
    for _, row in chosen.iterrows():
        x = load_input(row, kind, PROCESSED, pre)[0]
        heat = grad_cam(model, x, layer, spatial_dims=dims)
        if dims == 3:
            background = x[0].numpy()
        else:
            background = np.load(PROCESSED / row["grey_path"]) if row["grey_path"] else x.numpy().mean(0)
        path = save_overlay_png(background, heat, out_dir / "figures" / "gradcam" / f"{row['record_id']}.png")
        figures[f"Grad-CAM {row['record_id']} ({row['label']}, score {row['score']:.3f})"] = path
        boxes = adjudicated[adjudicated["record_id"] == row["record_id"]] if not adjudicated.empty else adjudicated
        if len(boxes):
            pred = heatmap_centres(heat, cfg.cam_threshold, cfg.dbscan_eps, cfg.dbscan_min_samples)
            cases.append((pred, _expert_centres(row, boxes, dims, pre)))
    agreement: dict[str, Any] = {"n_cases": len(cases)}
    if cases:
        try:
            agreement.update(agreement_over_cases(cases))
        except DataError as err:
            log.warning("centre agreement not computed: %s", err)
    return figures, agreement


def _confound(records: pd.DataFrame, cfg: EvaluateConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Is the label (almost) named by the source or the centre? The check and the card's rows (one per grouping).

    See :func:`covidscan.explain.shortcut.confound_check` (threshold ``evaluate.confound_purity``).
    """
    from covidscan.explain.shortcut import confound_check, label_purity

    labels = records["label"].astype(str).to_numpy()
    groupings = {c: records[c].astype(str).to_numpy() for c in ("source", "centre")}
    check = confound_check(labels, groupings, cfg.confound_purity)
    if check["warning"]:
        log.warning("%s", check["warning"])
    rows = [{"by": c, "label purity": label_purity(labels, g), "groups": len(set(g)), "majority class share": check["base_rate"],
             "warn at": cfg.confound_purity} for c, g in groupings.items()]  # fmt: skip
    return check, rows


COMPARISON_TABLE = "Comparison with the baselines (same test cases; each at its own threshold)"


def _compare_baselines(spec: ExperimentSpec, records: pd.DataFrame, params: Params, folder: Path) -> dict[str, dict[str, Any]]:
    """The baselines stage's models on the experiment's test cases: AUROC, sensitivity, specificity with CIs.

    The 3D ResNet is run like the experiment's model (its card's threshold); the SVM and the random forest
    score :func:`covidscan.models.baselines.volume_features` of the same volumes with the saved settings
    (threshold :data:`covidscan.models.baselines.CLASSIC_THRESHOLD`, each estimator's own boundary).
    Statistics: :func:`covidscan.evaluation.summary.evaluate_binary`.

    Raises:
        DataError: the folder is missing, or holds none of the baselines.
    """
    import joblib

    from covidscan.evaluation.experiment import class_scores, run_model
    from covidscan.evaluation.summary import evaluate_binary
    from covidscan.models.baselines import CLASSIC, CLASSIC_THRESHOLD, NETWORK, classic_scores, load_feature_settings, volume_features
    from covidscan.models.zoo import load_model
    from covidscan.preprocess.spec import input_spec

    if not folder.is_dir():
        raise DataError(f"{folder}: the baselines of experiment {spec.description or spec.subsets} are not there (run the baselines stage)")
    scored: dict[str, tuple[np.ndarray, float]] = {}
    if (folder / f"{NETWORK}.pt").is_file():
        net = load_model(folder / f"{NETWORK}.pt")
        outs = run_model(net, records, PROCESSED, params.preprocess)
        scored[NETWORK] = (class_scores(outs.outputs, list(net.card.class_labels), spec.positive, spec.negative), float(net.card.threshold))
    classic = [name for name in CLASSIC if (folder / f"{name}.joblib").is_file()]
    if classic:
        settings = load_feature_settings(folder)
        vol = input_spec("ct_volume", params.preprocess)
        volumes = (vol.to_tensor(np.load(PROCESSED / path)) for path in records["volume_path"])
        x = volume_features(volumes, settings["grid"], settings["bins"])
        for name in classic:
            scored[name] = (classic_scores(joblib.load(folder / f"{name}.joblib"), x), CLASSIC_THRESHOLD)
    missing = [n for n in (NETWORK, *CLASSIC) if n not in scored]
    if missing:
        log.warning("baselines %s: not in %s (the baselines stage skips a model whose training part has one class)", missing, folder)
    if not scored:
        raise DataError(f"{folder}: none of the baselines {[NETWORK, *CLASSIC]} is there")
    y = records["y"].to_numpy()
    out = {}
    for name, (scores, threshold) in scored.items():
        m = evaluate_binary(y, scores, params.evaluate, threshold=threshold, name=name)["metrics"]
        out[name] = {"threshold": threshold, "auroc": m.get("auroc_ci"), **{k: m[k] for k in ("sensitivity", "specificity", "n", "n_positive")}}
    return out


def _comparison_row(name: str, row: dict[str, Any]) -> dict[str, Any]:
    def ci(value: dict[str, float] | None) -> str:
        if not value:
            return "n/a"
        return f"{value['point']:.3f} ({value['low']:.3f}-{value['high']:.3f})"

    return {"model": name, "AUROC (95% CI)": ci(row["auroc"]), "sensitivity (95% CI)": ci(row["sensitivity"]),
            "specificity (95% CI)": ci(row["specificity"]), "threshold": row["threshold"], "n": row["n"], "positives": row["n_positive"]}  # fmt: skip


# ------------------------------------------------------------------------------ evaluations
def evaluate_classifier(model, spec: ExperimentSpec, records: pd.DataFrame, params: Params, out_dir: Path, max_cam: int | None,
                        models_dir: Path = Path("models")) -> dict[str, Any]:  # fmt: skip
    """Every classification statistic of one experiment; returns metrics, card parts, figures and warnings.

    ``models_dir`` holds the experiment's baselines folder (``spec.baselines``), when it has one.
    """
    from covidscan.evaluation.curves import grid_curve, multiclass_auroc
    from covidscan.evaluation.experiment import class_probs, class_scores, run_model
    from covidscan.evaluation.metrics import multiclass_indices
    from covidscan.evaluation.report import write_curve_csv
    from covidscan.evaluation.summary import evaluate_binary

    cfg = params.evaluate
    outs = run_model(model, records, PROCESSED, params.preprocess)
    labels = list(model.card.class_labels)
    scores = class_scores(outs.outputs, labels, spec.positive, spec.negative)
    records = records.assign(score=scores)
    y = records["y"].to_numpy()
    threshold = float(model.card.threshold)
    reads = _reads_for(records, _read(INGEST / "reads.parquet", required=False))
    subsets: dict[str, np.ndarray] = {}
    if "seed004_subset" in records:
        s1 = (records["seed004_subset"] == "S1").to_numpy()
        for name, other in (("S1 vs S2+S3", ("S2", "S3")), ("S1 vs S2", ("S2",)), ("S1 vs S3", ("S3",))):
            mask = s1 | records["seed004_subset"].isin(other).to_numpy()
            if mask.any() and (records["seed004_subset"].isin(other)).any():
                subsets[name] = mask
    rtpcr_neg = ((records["label"] == "covid19") & (records["rtpcr_initial"] == "negative")).to_numpy()
    if rtpcr_neg.any():
        subsets["covid19 with negative first RT-PCR"] = rtpcr_neg
    result = evaluate_binary(y, scores, cfg, threshold=threshold, reads=reads, subsets=subsets, figures_dir=out_dir / "figures", name=model.card.arch)
    if 0 < y.sum() < y.size:
        curve = grid_curve(y, scores, cfg.threshold_step)
        write_curve_csv(curve, "roc", out_dir / "roc.csv")
        write_curve_csv(curve, "pr", out_dir / "pr.csv")
    else:  # one class only (e.g. a tiny test set): no curve, but the plot files DVC expects exist
        log.warning("the test set has a single class: no ROC/PR curve")
        (out_dir / "roc.csv").write_text("fpr,tpr,threshold\n")
        (out_dir / "pr.csv").write_text("recall,precision,threshold\n")

    metrics = dict(result["metrics"])
    metrics["thresholds"] = {f"{row['threshold']:.2f}": {k: row[k] for k in ("sensitivity", "specificity", "f1")} for row in result["thresholds_table"]}
    tables = dict(result["card"]["tables"])
    figures = dict(result["figures"])
    from covidscan.evaluation.external import breakdown

    per_source = breakdown(records, scores, threshold, "source")
    per_centre = breakdown(records, scores, threshold, "centre")
    tables["Per source"] = per_source
    tables["Per centre"] = per_centre
    metrics["per_source"] = {r["source"]: {k: r[k] for k in ("sensitivity", "specificity", "f1", "auroc", "n")} for r in per_source}
    metrics["per_centre"] = {r["centre"]: {k: r[k] for k in ("sensitivity", "specificity", "f1", "auroc", "n")} for r in per_centre}
    metrics["time_per_case_s"] = {"mean": float(outs.seconds.mean()), "median": float(np.median(outs.seconds))}
    confound, purity_rows = _confound(records, cfg)
    metrics["confound"] = confound
    tables["Confound check: label purity by source and centre"] = purity_rows
    if model.card.input_spec.kind == "ct_volume":
        metrics["time_per_volume_s"] = metrics["time_per_case_s"]["mean"]

    classes = [*spec.positive, *spec.negative]
    if len(classes) > 2 and set(classes) <= set(labels):  # experiment R: one-vs-rest + macro
        probs = class_probs(outs.outputs, labels, classes)
        y_class = records["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        mc = multiclass_indices(y_class, probs.argmax(1), classes)
        au = multiclass_auroc(y_class, probs, classes, cfg.threshold_step)
        metrics["multiclass"] = {c: {**{k: mc[c][k] for k in ("sensitivity", "specificity", "precision", "f1", "kappa")}, **au[c]} for c in [*classes, "macro"]}
        metrics["multiclass"]["overall"] = mc["overall"]
        tables["One-vs-rest and macro (three classes)"] = [{"class": c, **metrics["multiclass"][c]} for c in [*classes, "macro"]]

    disease_auroc = metrics.get("auroc_exact")
    shortcut = _shortcut(records, outs.features, cfg, params.run.seed, disease_auroc if disease_auroc == disease_auroc else None)
    for row in shortcut:
        if "auroc" in row and "features" in row and "target" in row:
            metrics.setdefault("shortcut", {})[f"{row['target']}.{row['features']}"] = row["auroc"]

    annotations = _read(INGEST / "annotations.parquet", required=False)
    cams, agreement = _grad_cams(model, records, annotations, params, out_dir, max_cam)
    figures.update(cams)
    metrics["centres"] = agreement
    card_metrics = result["card"]["metrics"]
    if spec.baselines:
        own = {"threshold": threshold, "auroc": metrics.get("auroc_ci"), **{k: metrics[k] for k in ("sensitivity", "specificity", "n", "n_positive")}}
        comparison = {model.card.arch: own, **_compare_baselines(spec, records, params, models_dir / spec.baselines)}
        metrics["comparison"] = comparison
        tables[COMPARISON_TABLE] = [_comparison_row(name, row) for name, row in comparison.items()]
    return {"metrics": metrics, "tables": tables, "figures": figures, "card_metrics": card_metrics, "shortcut": shortcut, "records": records,
            "warnings": [confound["warning"]] if confound["warning"] else []}  # fmt: skip


def evaluate_regressor(model, model_path: Path, records: pd.DataFrame, params: Params, out_dir: Path) -> dict[str, Any]:
    """CNNRF: MSE, RMSE, MAE, R^2 and Pearson r per indicator and pooled; each r vs the critical value.

    The reference indicators are normalised with the model's own target range (its card's
    ``target_range``: the training part's min/max); a model without one is refused
    (:class:`covidscan.models.card.MissingTargetRange` naming ``model_path``). Significance
    (:func:`covidscan.evaluation.regression.indicator_significance`): per indicator with n = test cases;
    the pooled r (all indicators flattened, n = cases x indicators) separately, under ``pooled``.
    """
    import matplotlib.pyplot as plt

    from covidscan.evaluation.experiment import run_model
    from covidscan.evaluation.regression import POOLED, indicator_significance, regression_report

    target_range = model.card.require_target_range(str(model_path))
    names = list(model.card.class_labels)
    clinical = _read(INGEST / "clinical.parquet")
    records = records[records["record_id"].isin(clinical["record_id"])].reset_index(drop=True)
    if records.empty:
        raise DataError("no test record of the experiment has clinical indicators")
    truth = target_range.normalise(clinical.set_index("record_id").loc[records["record_id"], names].to_numpy(float))
    outs = run_model(model, records, PROCESSED, params.preprocess)
    report = regression_report(truth, outs.outputs, names)
    significance = indicator_significance(report, params.evaluate.critical_alpha)
    metrics: dict[str, Any] = {"n_cases": len(records), "regression": report, "significance": significance,
                               "n_significant_indicators": sum(bool(significance[k]["significant"]) for k in names),
                               "target_range": {n: {"min": lo, "max": hi} for n, lo, hi in zip(target_range.names, target_range.low, target_range.high)}}  # fmt: skip
    if GROUND_TRUTH.is_file():
        gt = json.loads(GROUND_TRUTH.read_text()).get("clinical", {})
        metrics["generator_stated_r"] = {k: float(v) for k, v in (gt.get("stated_correlation") or {}).items()}
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for j, name in enumerate(names):
        ax.scatter(truth[:, j], outs.outputs[:, j], s=12, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("reference (min-max normalised with the training range)")
    ax.set_ylabel("prediction")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "figures" / "regression_scatter.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    pooled_label = f"pooled ({len(names)} indicators flattened)"
    rows = [{"indicator": k, **v} for k, v in report.items() if k != POOLED] + [{"indicator": pooled_label, **report[POOLED]}]
    columns = ["r", "n", "r_critical", "ratio", "p_value", "significant"] + (["note"] if any("note" in v for v in significance.values()) else [])
    sig_rows = [{"indicator": k if k != POOLED else f"{pooled_label}, n = cases x indicators", **{c: v.get(c) for c in columns}} for k, v in significance.items()]
    tables = {
        "Regression indices": rows,
        f"Correlation vs the critical r (alpha {params.evaluate.critical_alpha:g}; per indicator n = {len(records)} cases)": sig_rows,
        "Target range (training part, the model's normalisation)": target_range.rows(),
    }
    return {"metrics": metrics, "tables": tables, "figures": {"Predicted vs reference indicators": path}, "card_metrics": {}, "shortcut": None, "records": records}


# ------------------------------------------------------------------------------------- stage
def evaluate_experiment(params: Params, name: str, models_dir: Path, metrics_dir: Path, reports_dir: Path, max_cam: int | None = None) -> dict[str, Any]:
    """Evaluate one experiment and write its metrics JSON, curves, figures and model card.

    Returns:
        ``{"metrics_path", "card_path", "figures", "metrics"}``.
    """
    from covidscan.evaluation.experiment import test_records, usable_records
    from covidscan.evaluation.report import write_metrics_json, write_model_card
    from covidscan.models.zoo import load_model

    if name not in params.experiments:
        raise ConfigError(f"params.yaml experiments: no experiment {name!r}; known: {', '.join(params.experiments)}")
    spec = params.experiments[name]
    model_path = models_dir / f"{spec.model}.pt"
    model = load_model(model_path)
    records = test_records(spec, _read(SPLITS), _read(PROCESSED / "index.parquet"), _read(INGEST / "manifest.parquet"))
    splits = _read(SPLITS)
    # seed 004's S1/S2/S3 rows belong to its centre-held-out sub-datasets (splits.centre_subsets) only
    centre = [s for s in spec.subsets if s in params.splits.centre_subsets]
    if centre and "seed004_subset" in splits:
        sub = splits[splits["subset"].isin(centre)].drop_duplicates("record_id").set_index("record_id")
        records["seed004_subset"] = records["record_id"].map(sub["seed004_subset"]).fillna("")
    records = usable_records(records, model.card.input_spec.kind)
    out_dir = reports_dir / name
    shutil.rmtree(out_dir / "figures", ignore_errors=True)  # no stale overlays from an earlier run
    out_dir.mkdir(parents=True, exist_ok=True)
    if model.card.task == "regression":
        res = evaluate_regressor(model, model_path, records, params, out_dir)
    else:
        res = evaluate_classifier(model, spec, records, params, out_dir, max_cam, models_dir)
    metrics = {"experiment": name, "model": spec.model, **res["metrics"]}
    metrics_path = write_metrics_json(metrics, metrics_dir / f"{name}.json")
    recs = res["records"]
    data_summary = {
        "experiment": f"{name}: {spec.description}",
        "subsets (test part)": ", ".join(spec.subsets),
        "test cases": len(recs),
        "positives": int(recs["y"].sum()),
        "classes": ", ".join(f"{k}: {v}" for k, v in recs["label"].value_counts().sort_index().items()),
        "sources": ", ".join(sorted(recs["source"].astype(str).unique())),
        "centres": ", ".join(sorted(recs["centre"].astype(str).unique())),
    }
    card_path = write_model_card(
        out_dir / "model_card.html",
        model_name=f"{spec.model}, experiment {name}",
        description=f"{model.card.arch} ({model.card.task}), operating threshold {model.card.threshold:.3f}; input {model.card.input_spec.kind}.",
        data_summary=data_summary,
        metrics=res["card_metrics"],
        figures=res["figures"],
        tables=res["tables"],
        shortcut=res["shortcut"],
        extra={"model file": str(model_path), "bootstrap resamples": params.evaluate.bootstrap},
        warnings=res.get("warnings", ()),
    )
    return {"metrics_path": metrics_path, "card_path": card_path, "figures": res["figures"], "metrics": metrics, "out_dir": out_dir}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--stage", default=None, help="DVC stage name for the MLflow run (default: evaluate@<experiment>)")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics/evaluate"))
    parser.add_argument("--reports-dir", type=Path, default=Path("reports/evaluate"))
    parser.add_argument("--max-gradcam", type=int, default=None, help="Grad-CAM overlays for at most this many test cases (default all)")
    args = parser.parse_args(argv)
    params = load_params(args.params, profile=args.profile)
    from covidscan.evaluation.report import flatten_metrics
    from covidscan.tracking.runs import log_artifact, log_metrics, stage_run

    with stage_run(args.stage or f"evaluate@{args.experiment}", params.evaluate, experiment=params.run.experiment_name):
        out = evaluate_experiment(params, args.experiment, args.models_dir, args.metrics_dir, args.reports_dir, args.max_gradcam)
        flat = {k: float(v) for k, v in flatten_metrics(out["metrics"]).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        log_metrics({k.replace("+", "_"): v for k, v in flat.items()})
        log_artifact(out["metrics_path"], "metrics")
        for path in sorted(out["out_dir"].rglob("*")):
            if path.is_file():
                rel = path.parent.relative_to(out["out_dir"])
                log_artifact(path, "report" if str(rel) == "." else f"report/{rel}")
    log.info("evaluate@%s: wrote %s and %s", args.experiment, out["metrics_path"], out["card_path"])


if __name__ == "__main__":
    stage_main(main)
