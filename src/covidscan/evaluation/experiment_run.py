"""One experiment's evaluation (the logic of the DVC stage ``evaluate@<experiment>``, SPEC.md section 5).

:func:`evaluate_experiment` loads the experiment's model, selects its test records, runs
:func:`evaluate_classifier` or :func:`evaluate_regressor` and writes the flat metrics JSON and the model
card; the curves (``roc.csv``, ``pr.csv``) and the figures are written under ``<reports_dir>/<experiment>/``
on the way. The stage (``pipelines/evaluate.py``) parses its arguments, loads the parameters, passes its
paths (:class:`EvaluationInputs`) and logs the outputs to MLflow.

Classifiers (experiments A, B, C, S ...): indices at the model's operating threshold with bootstrap CIs,
ROC/PR, readers and McNemar, calibration, per-source/per-centre breakdowns, Yao et al.'s subsets (only for
experiments on the centre-held-out sub-datasets, ``splits.centre_subsets``) and thresholds table,
per-volume time, the source-shortcut probe, the confound check (``confound``: the label named by the source
or centre for at least ``evaluate.confound_purity`` of the cases; a warning at the top of the card),
Grad-CAM overlays and DBSCAN centres vs the adjudicated expert boxes. An experiment with ``baselines``
(S) also scores the baselines stage's models (``<models_dir>/<baselines>/``) on the same cases:
``comparison.<model>`` (AUROC, sensitivity, specificity with CIs, threshold, n) and a card table.
Three-class experiments (R-*): one-vs-rest + macro. A ``cnnrf`` model: the regression indices of the
five clinical indicators (normalised with the model card's training range), each indicator's r against
the critical r for n = test cases, and the pooled r labelled ``pooled``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covidscan.config import EvaluateConfig, ExperimentSpec, Params
from covidscan.errors import ConfigError, DataError, NoModelTrained, NoTestRecords

log = logging.getLogger(__name__)

COMPARISON_TABLE = "Comparison with the baselines (same test cases; each at its own threshold)"
YAO_COMPARISONS = (("S1 vs S2+S3", ("S2", "S3")), ("S1 vs S2", ("S2",)), ("S1 vs S3", ("S3",)))


# ---------------------------------------------------------------------------------- inputs and results
@dataclass(frozen=True)
class EvaluationInputs:
    """The tables and arrays an evaluation reads; the stage passes its own paths.

    Attributes:
        processed_dir: the preprocess stage's folder (arrays and ``index.parquet``).
        splits: the split table (``splits.parquet``).
        manifest, reads, annotations, clinical: the ingest stage's tables (reads, annotations and a
            missing ``clinical`` for a classifier are optional).
        ground_truth: the synthetic generator's ``ground_truth.json`` (its stated correlations), if any.
    """

    processed_dir: Path
    splits: Path
    manifest: Path
    reads: Path
    annotations: Path
    clinical: Path
    ground_truth: Path | None = None

    @classmethod
    def from_ingest(cls, processed_dir: Path, splits: Path, ingest_dir: Path, ground_truth: Path | None = None) -> EvaluationInputs:
        """The ingest stage's tables under ``ingest_dir`` by their file names."""
        return cls(processed_dir=Path(processed_dir), splits=Path(splits), manifest=Path(ingest_dir) / "manifest.parquet",
                   reads=Path(ingest_dir) / "reads.parquet", annotations=Path(ingest_dir) / "annotations.parquet",
                   clinical=Path(ingest_dir) / "clinical.parquet", ground_truth=ground_truth)  # fmt: skip

    @property
    def index(self) -> Path:
        return self.processed_dir / "index.parquet"


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_classifier` or :func:`evaluate_regressor` found, for the metrics JSON and the card.

    Attributes:
        metrics: the nested metrics (written flat by :func:`covidscan.evaluation.report.write_metrics_json`).
        tables: card title -> rows.
        figures: caption -> PNG.
        card_metrics: the card's table of indices with CIs.
        shortcut: the source-shortcut rows (None for a regressor).
        records: the test records actually evaluated (with ``score`` for a classifier).
        warnings: shown at the top of the card.
    """

    metrics: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    figures: dict[str, Path]
    card_metrics: dict[str, Any]
    shortcut: list[dict[str, Any]] | None
    records: pd.DataFrame
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExperimentOutcome:
    """What :func:`evaluate_experiment` wrote: the metrics JSON, the card, the figures, and the folder of all reports."""

    metrics_path: Path
    card_path: Path
    figures: dict[str, Path]
    metrics: dict[str, Any]
    out_dir: Path


@dataclass(frozen=True)
class BaselineScore:
    """One model of an experiment's comparison (``comparison.<model>``): indices with CIs at its own threshold."""

    threshold: float
    auroc: dict[str, float] | None
    sensitivity: dict[str, float]
    specificity: dict[str, float]
    n: int
    n_positive: int

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any], threshold: float) -> BaselineScore:
        """From :func:`covidscan.evaluation.summary.evaluate_binary`'s metrics."""
        return cls(threshold, metrics.get("auroc_ci"), **{k: metrics[k] for k in ("sensitivity", "specificity", "n", "n_positive")})

    def as_metrics(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "auroc": self.auroc, "sensitivity": self.sensitivity, "specificity": self.specificity,
                "n": self.n, "n_positive": self.n_positive}  # fmt: skip

    def card_row(self, name: str) -> dict[str, Any]:
        def ci(value: dict[str, float] | None) -> str:
            if not value:
                return "n/a"
            return f"{value['point']:.3f} ({value['low']:.3f}-{value['high']:.3f})"

        return {"model": name, "AUROC (95% CI)": ci(self.auroc), "sensitivity (95% CI)": ci(self.sensitivity),
                "specificity (95% CI)": ci(self.specificity), "threshold": self.threshold, "n": self.n, "positives": self.n_positive}  # fmt: skip


# ---------------------------------------------------------------------------------- helpers
def read_stage_table(path: Path, required: bool = True) -> pd.DataFrame:
    """An upstream stage's parquet table; an empty frame for a missing optional one.

    Raises:
        DataError: a required table is missing.
    """
    if not path.is_file():
        if required:
            raise DataError(f"{path}: not found (run the upstream stages first)")
        return pd.DataFrame()
    return pd.read_parquet(path)


def reads_for(records: pd.DataFrame, reads: pd.DataFrame) -> dict[str, np.ndarray]:
    """Reader -> calls aligned with the records (only readers who read every case)."""
    if reads.empty:
        return {}
    out = {}
    for reader, grp in reads.groupby("reader"):
        calls = grp.set_index("record_id")["read"]
        if records["record_id"].isin(calls.index).all():
            out[str(reader)] = calls.loc[records["record_id"]].to_numpy().astype(int)
    return out


def comparison_subsets(records: pd.DataFrame) -> dict[str, np.ndarray]:
    """Yao et al.'s S1-vs-S2/S3 masks (when the records carry ``yao_subset``) and the covid19 cases with a negative first RT-PCR."""
    subsets: dict[str, np.ndarray] = {}
    if "yao_subset" in records:
        s1 = (records["yao_subset"] == "S1").to_numpy()
        for name, other in YAO_COMPARISONS:
            mask = s1 | records["yao_subset"].isin(other).to_numpy()
            if mask.any() and (records["yao_subset"].isin(other)).any():
                subsets[name] = mask
    rtpcr_neg = ((records["label"] == "covid19") & (records["rtpcr_initial"] == "negative")).to_numpy()
    if rtpcr_neg.any():
        subsets["covid19 with negative first RT-PCR"] = rtpcr_neg
    return subsets


def shortcut_rows(records: pd.DataFrame, features: np.ndarray, processed_dir: Path, cfg: EvaluateConfig, seed: int,
                  disease_auroc: float | None) -> list[dict[str, Any]]:  # fmt: skip
    """Source/centre predictability from the images (thumbnails, histograms) and from the model's features."""
    from covidscan.explain.shortcut import histogram_features, pixel_features, shortcut_table

    images = [np.load(processed_dir / (r["grey_path"] or r["image_path"])) for _, r in records.iterrows()]
    sets = {"pixels 16x16": pixel_features(images), "histogram": histogram_features(images), "model features": features}
    targets = {"source": records["source"].astype(str).to_numpy(), "centre": records["centre"].astype(str).to_numpy()}
    try:
        return shortcut_table(sets, targets, disease_auroc=disease_auroc, disease_n=len(records), n_splits=cfg.shortcut_folds, seed=seed)
    except DataError as err:
        log.warning("shortcut probe skipped: %s", err)
        return [{"note": f"not computed: {err}"}]


def confound(records: pd.DataFrame, cfg: EvaluateConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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


def compare_baselines(spec: ExperimentSpec, records: pd.DataFrame, params: Params, folder: Path, processed_dir: Path) -> dict[str, BaselineScore]:
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
        outs = run_model(net, records, processed_dir, params.preprocess)
        scored[NETWORK] = (class_scores(outs.outputs, list(net.card.class_labels), spec.positive, spec.negative), float(net.card.threshold))
    classic = [name for name in CLASSIC if (folder / f"{name}.joblib").is_file()]
    if classic:
        settings = load_feature_settings(folder)
        vol = input_spec("ct_volume", params.preprocess)
        volumes = (vol.to_tensor(np.load(processed_dir / path)) for path in records["volume_path"])
        x = volume_features(volumes, settings["grid"], settings["bins"])
        for name in classic:
            scored[name] = (classic_scores(joblib.load(folder / f"{name}.joblib"), x), CLASSIC_THRESHOLD)
    missing = [n for n in (NETWORK, *CLASSIC) if n not in scored]
    if missing:
        log.warning("baselines %s: not in %s (the baselines stage skips a model whose training part has one class)", missing, folder)
    if not scored:
        raise DataError(f"{folder}: none of the baselines {[NETWORK, *CLASSIC]} is there")
    y = records["y"].to_numpy()
    return {name: BaselineScore.from_metrics(evaluate_binary(y, scores, params.evaluate, threshold=threshold, name=name)["metrics"], threshold)
            for name, (scores, threshold) in scored.items()}  # fmt: skip


# ------------------------------------------------------------------------------ evaluations
def evaluate_classifier(model, spec: ExperimentSpec, records: pd.DataFrame, params: Params, inputs: EvaluationInputs, out_dir: Path,
                        max_cam: int | None, models_dir: Path) -> EvaluationResult:  # fmt: skip
    """Every classification statistic of one experiment; returns metrics, card parts, figures and warnings.

    ``models_dir`` holds the experiment's baselines folder (``spec.baselines``), when it has one.
    """
    from covidscan.evaluation.curves import grid_curve, multiclass_auroc
    from covidscan.evaluation.experiment import class_probs, class_scores, run_model
    from covidscan.evaluation.external import breakdown
    from covidscan.evaluation.metrics import multiclass_indices
    from covidscan.evaluation.report import write_curve_csv
    from covidscan.evaluation.summary import evaluate_binary
    from covidscan.explain.gradcam import grad_cam_cases

    cfg = params.evaluate
    outs = run_model(model, records, inputs.processed_dir, params.preprocess)
    labels = list(model.card.class_labels)
    scores = class_scores(outs.outputs, labels, spec.positive, spec.negative)
    records = records.assign(score=scores)
    y = records["y"].to_numpy()
    threshold = float(model.card.threshold)
    reads = reads_for(records, read_stage_table(inputs.reads, required=False))
    subsets = comparison_subsets(records)
    result = evaluate_binary(y, scores, cfg, threshold=threshold, reads=reads, subsets=subsets, figures_dir=out_dir / "figures", name=model.card.arch)
    if 0 < y.sum() < y.size:
        curve = grid_curve(y, scores, cfg.threshold_step)
        write_curve_csv(curve, "roc", out_dir / "roc.csv")
        write_curve_csv(curve, "pr", out_dir / "pr.csv")
    else:  # one class only (e.g. a tiny test set): no curve, but the plot files DVC expects exist
        log.warning("the test set has a single class: no ROC/PR curve")
        write_empty_curves(out_dir)

    metrics = dict(result["metrics"])
    metrics["thresholds"] = {f"{row['threshold']:.2f}": {k: row[k] for k in ("sensitivity", "specificity", "f1")} for row in result["thresholds_table"]}
    tables = dict(result["card"]["tables"])
    figures = dict(result["figures"])
    per_source = breakdown(records, scores, threshold, "source")
    per_centre = breakdown(records, scores, threshold, "centre")
    tables["Per source"] = per_source
    tables["Per centre"] = per_centre
    metrics["per_source"] = {r["source"]: {k: r[k] for k in ("sensitivity", "specificity", "f1", "auroc", "n")} for r in per_source}
    metrics["per_centre"] = {r["centre"]: {k: r[k] for k in ("sensitivity", "specificity", "f1", "auroc", "n")} for r in per_centre}
    metrics["time_per_case_s"] = {"mean": float(outs.seconds.mean()), "median": float(np.median(outs.seconds))}
    check, purity_rows = confound(records, cfg)
    metrics["confound"] = check
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
    shortcut = shortcut_rows(records, outs.features, inputs.processed_dir, cfg, params.run.seed, disease_auroc if disease_auroc == disease_auroc else None)
    for row in shortcut:
        if "auroc" in row and "features" in row and "target" in row:
            metrics.setdefault("shortcut", {})[f"{row['target']}.{row['features']}"] = row["auroc"]

    annotations = read_stage_table(inputs.annotations, required=False)
    cams = grad_cam_cases(model, records, annotations, inputs.processed_dir, cfg, params.preprocess, out_dir, max_cam)
    figures.update(cams.figures)
    metrics["centres"] = cams.agreement
    if spec.baselines:
        comparison = {model.card.arch: BaselineScore.from_metrics(metrics, threshold),
                      **compare_baselines(spec, records, params, models_dir / spec.baselines, inputs.processed_dir)}  # fmt: skip
        metrics["comparison"] = {name: score.as_metrics() for name, score in comparison.items()}
        tables[COMPARISON_TABLE] = [score.card_row(name) for name, score in comparison.items()]
    return EvaluationResult(metrics=metrics, tables=tables, figures=figures, card_metrics=result["card"]["metrics"], shortcut=shortcut,
                            records=records, warnings=(check["warning"],) if check["warning"] else ())  # fmt: skip


def evaluate_regressor(model, model_path: Path, records: pd.DataFrame, params: Params, inputs: EvaluationInputs, out_dir: Path) -> EvaluationResult:
    """CNNRF: MSE, RMSE, MAE, R^2 and Pearson r per indicator and pooled; each r vs the critical value.

    The reference indicators are normalised with the model's own target range (its card's
    ``target_range``: the training part's min/max); a model without one is refused
    (:class:`covidscan.models.card.MissingTargetRange` naming ``model_path``). Significance
    (:func:`covidscan.evaluation.regression.indicator_significance`): per indicator with n = test cases;
    the pooled r (all indicators flattened, n = cases x indicators) separately, under ``pooled``.
    """
    from covidscan.evaluation.experiment import run_model
    from covidscan.evaluation.regression import POOLED, indicator_significance, regression_report

    target_range = model.card.require_target_range(str(model_path))
    names = list(model.card.class_labels)
    clinical = read_stage_table(inputs.clinical)
    records = records[records["record_id"].isin(clinical["record_id"])].reset_index(drop=True)
    if records.empty:
        raise DataError("no test record of the experiment has clinical indicators")
    truth = target_range.normalise(clinical.set_index("record_id").loc[records["record_id"], names].to_numpy(float))
    outs = run_model(model, records, inputs.processed_dir, params.preprocess)
    report = regression_report(truth, outs.outputs, names)
    significance = indicator_significance(report, params.evaluate.critical_alpha)
    metrics: dict[str, Any] = {"n_cases": len(records), "regression": report, "significance": significance,
                               "n_significant_indicators": sum(bool(significance[k]["significant"]) for k in names),
                               "target_range": {n: {"min": lo, "max": hi} for n, lo, hi in zip(target_range.names, target_range.low, target_range.high)}}  # fmt: skip
    if inputs.ground_truth is not None and inputs.ground_truth.is_file():
        gt = json.loads(inputs.ground_truth.read_text()).get("clinical", {})
        metrics["generator_stated_r"] = {k: float(v) for k, v in (gt.get("stated_correlation") or {}).items()}
    from covidscan.visualize import plot_regression_scatter

    path = plot_regression_scatter(truth, outs.outputs, names, out_dir / "figures" / "regression_scatter.png")
    pooled_label = f"pooled ({len(names)} indicators flattened)"
    rows = [{"indicator": k, **v} for k, v in report.items() if k != POOLED] + [{"indicator": pooled_label, **report[POOLED]}]
    columns = ["r", "n", "r_critical", "ratio", "p_value", "significant"] + (["note"] if any("note" in v for v in significance.values()) else [])
    sig_rows = [{"indicator": k if k != POOLED else f"{pooled_label}, n = cases x indicators", **{c: v.get(c) for c in columns}} for k, v in significance.items()]
    tables = {
        "Regression indices": rows,
        f"Correlation vs the critical r (alpha {params.evaluate.critical_alpha:g}; per indicator n = {len(records)} cases)": sig_rows,
        "Target range (training part, the model's normalisation)": target_range.rows(),
    }
    return EvaluationResult(metrics=metrics, tables=tables, figures={"Predicted vs reference indicators": path}, card_metrics={}, shortcut=None,
                            records=records)  # fmt: skip


def experiment_test_records(params: Params, spec: ExperimentSpec, inputs: EvaluationInputs, model_kind: str) -> pd.DataFrame:
    """The experiment's usable test records, with Yao et al.'s S1/S2/S3 column for the centre-held-out sub-datasets."""
    from covidscan.evaluation.experiment import test_records, usable_records

    splits = read_stage_table(inputs.splits)
    records = test_records(spec, splits, read_stage_table(inputs.index), read_stage_table(inputs.manifest))
    # Yao et al.'s S1/S2/S3 rows belong to its centre-held-out sub-datasets (splits.centre_subsets) only
    centre = [s for s in spec.subsets if s in params.splits.centre_subsets]
    if centre and "yao_subset" in splits:
        sub = splits[splits["subset"].isin(centre)].drop_duplicates("record_id").set_index("record_id")
        records["yao_subset"] = records["record_id"].map(sub["yao_subset"]).fillna("")
    return usable_records(records, model_kind)


def skip_experiment(name: str, spec: ExperimentSpec, why: str, metrics_dir: Path, out_dir: Path) -> ExperimentOutcome:
    """The explicit outputs of an experiment the data cannot make: metrics ``{"skipped": true, "why": ...}``,
    a card that says so, header-only curves (``dvc plots`` still finds its files), no figures."""
    from covidscan.evaluation.report import write_metrics_json, write_model_card

    log.warning("experiment %s skipped: %s", name, why)
    metrics = {"experiment": name, "model": spec.model, "skipped": True, "why": why}
    metrics_path = write_metrics_json(metrics, metrics_dir / f"{name}.json")
    write_empty_curves(out_dir)
    card_path = write_model_card(
        out_dir / "model_card.html", model_name=f"{spec.model}, experiment {name}", description=f"Not evaluated: {why}",
        data_summary={"experiment": f"{name}: {spec.description}", "subsets (test part)": ", ".join(spec.subsets), "skipped": why},
        warnings=[f"experiment skipped: {why}"],
    )  # fmt: skip
    return ExperimentOutcome(metrics_path=metrics_path, card_path=card_path, figures={}, metrics=metrics, out_dir=out_dir)


def write_empty_curves(out_dir: Path) -> None:
    """Header-only ``roc.csv`` and ``pr.csv``: no curve (one class, or a skipped experiment), but the files DVC expects."""
    (out_dir / "roc.csv").write_text("fpr,tpr,threshold\n")
    (out_dir / "pr.csv").write_text("recall,precision,threshold\n")


def data_summary(name: str, spec: ExperimentSpec, records: pd.DataFrame) -> dict[str, Any]:
    """The model card's description of the evaluated test set."""
    return {
        "experiment": f"{name}: {spec.description}",
        "subsets (test part)": ", ".join(spec.subsets),
        "test cases": len(records),
        "positives": int(records["y"].sum()),
        "classes": ", ".join(f"{k}: {v}" for k, v in records["label"].value_counts().sort_index().items()),
        "sources": ", ".join(sorted(records["source"].astype(str).unique())),
        "centres": ", ".join(sorted(records["centre"].astype(str).unique())),
    }


# ------------------------------------------------------------------------------ one experiment
def evaluate_experiment(params: Params, name: str, inputs: EvaluationInputs, models_dir: Path, metrics_dir: Path, reports_dir: Path,
                        max_cam: int | None = None) -> ExperimentOutcome:  # fmt: skip
    """Evaluate one experiment and write its metrics JSON (``<metrics_dir>/<name>.json``), curves, figures and model card.

    Args:
        params: the parameters (``experiments``, ``evaluate``, ``preprocess``, ``splits``, ``run``).
        name: the experiment.
        inputs: where the upstream tables and arrays are.
        models_dir: ``<model>.pt`` of the experiment and its baselines folder.
        metrics_dir: the flat metrics JSON goes here.
        reports_dir: the curves, figures and card go to ``<reports_dir>/<name>/``.
        max_cam: Grad-CAM overlays for at most this many test cases (None: all).

    An experiment the data cannot make (its model was not trained, or its test parts hold no usable
    record: a team's sources need not cover every sub-dataset) is skipped, not failed: its metrics say
    ``skipped: true`` and why, its card says so, and its curves are header-only files.

    Raises:
        ConfigError: no such experiment.
        DataError: an upstream table or array is missing.
    """
    from covidscan.evaluation.report import write_metrics_json, write_model_card
    from covidscan.models.zoo import load_model

    if name not in params.experiments:
        raise ConfigError(f"params.yaml experiments: no experiment {name!r}; known: {', '.join(params.experiments)}")
    spec = params.experiments[name]
    model_path = models_dir / f"{spec.model}.pt"
    out_dir = reports_dir / name
    shutil.rmtree(out_dir / "figures", ignore_errors=True)  # no stale overlays from an earlier run
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    try:
        model = load_model(model_path)
        records = experiment_test_records(params, spec, inputs, model.card.input_spec.kind)
    except (NoModelTrained, NoTestRecords) as err:
        return skip_experiment(name, spec, str(err), metrics_dir, out_dir)
    if model.card.task == "regression":
        res = evaluate_regressor(model, model_path, records, params, inputs, out_dir)
        write_empty_curves(out_dir)  # a regressor has no ROC/PR curve; dvc.yaml's plots still name the files
    else:
        res = evaluate_classifier(model, spec, records, params, inputs, out_dir, max_cam, models_dir)
    metrics = {"experiment": name, "model": spec.model, **res.metrics}
    metrics_path = write_metrics_json(metrics, metrics_dir / f"{name}.json")
    card_path = write_model_card(
        out_dir / "model_card.html",
        model_name=f"{spec.model}, experiment {name}",
        description=f"{model.card.arch} ({model.card.task}), operating threshold {model.card.threshold:.3f}; input {model.card.input_spec.kind}.",
        data_summary=data_summary(name, spec, res.records),
        metrics=res.card_metrics,
        figures=res.figures,
        tables=res.tables,
        shortcut=res.shortcut,
        extra={"model file": str(model_path), "bootstrap resamples": params.evaluate.bootstrap},
        warnings=res.warnings,
    )
    return ExperimentOutcome(metrics_path=metrics_path, card_path=card_path, figures=res.figures, metrics=metrics, out_dir=out_dir)
