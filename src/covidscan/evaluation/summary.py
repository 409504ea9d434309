"""One call that evaluates a binary classifier's test scores the papers' way (SPEC.md section 5).

:func:`evaluate_binary` composes the pure functions of this package: indices at the operating
threshold with bootstrap CIs, grid ROC/PR with AUROC/AUPRC (and the exact values), the ROC band,
Yao et al.'s thresholds table, calibration, the readers (indices with paired CIs, McNemar) and named
subsets (Yao et al. 2021: S1 vs S2+S3, COVID-19 cases whose first RT-PCR was negative). Given a folder it
also draws the figures. It returns plain dicts: ``result["metrics"]`` is ready for
:func:`covidscan.evaluation.report.write_metrics_json` and ``result["card"]`` for
:func:`covidscan.evaluation.report.write_model_card`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covidscan.config import EvaluateConfig
from covidscan.errors import DataError
from covidscan.evaluation.bootstrap import (
    bootstrap_auroc,
    bootstrap_binary_indices,
    roc_with_ci,
)
from covidscan.evaluation.curves import (
    Curve,
    auprc,
    auprc_exact,
    auroc,
    auroc_exact,
    choose_threshold,
    grid_curve,
    reliability,
    thresholds_table,
)
from covidscan.evaluation.metrics import binarize, indices_at_threshold
from covidscan.evaluation.readers import compare_with_readers, reader_indices, reader_points
from covidscan.visualize import plot_boxplots, plot_pr, plot_reliability, plot_roc, plot_roc_band

log = logging.getLogger(__name__)


def operating_threshold(
    config: EvaluateConfig, y_val: np.ndarray | None = None, scores_val: np.ndarray | None = None
) -> float:
    """The operating threshold under ``config.threshold_rule``.

    Args:
        config: the evaluate section (``threshold``, ``threshold_rule``, ``min_sensitivity``,
            ``threshold_step``).
        y_val: validation labels (needed unless the rule is "fixed").
        scores_val: validation scores.

    Returns:
        ``config.threshold`` for "fixed", else the threshold chosen on the validation data.

    Raises:
        DataError: a data-driven rule without validation data.
    """
    if config.threshold_rule == "fixed":
        return float(config.threshold)
    if y_val is None or scores_val is None:
        raise DataError(
            f"evaluate.threshold_rule={config.threshold_rule!r} needs validation scores"
        )
    return choose_threshold(
        y_val,
        scores_val,
        rule=config.threshold_rule,
        min_sensitivity=config.min_sensitivity,
        step=config.threshold_step,
    )


@dataclass(frozen=True)
class OperatingPoint:
    """A model's operating threshold and how it was chosen.

    Attributes:
        threshold: the threshold (stored on the model card).
        rule: the rule applied: ``evaluate.threshold_rule``, or "fixed" when it could not be applied.
        note: why the configured rule was not applied ("" when it was).
        n_val: validation cases it was chosen on (0 for "fixed").
    """

    threshold: float
    rule: str
    note: str = ""
    n_val: int = 0


def operating_point(config: EvaluateConfig, y_val: np.ndarray, scores_val: np.ndarray) -> OperatingPoint:
    """A model's operating threshold from its validation data, by ``config.threshold_rule``.

    Every trained classifier gets its threshold here (the distilled students, CSAC-Net, the 3D ResNet),
    on its own validation fold, never on test data. When the validation data lack a class no data-driven
    rule applies: the fixed ``config.threshold`` is used, with a warning, and the returned ``rule`` and
    ``note`` say so (the stages record them in their metrics).

    Args:
        config: the evaluate section.
        y_val: validation labels 0/1 (1 = the positive class).
        scores_val: validation positive-class scores.
    """
    y = np.asarray(y_val).astype(int)
    if config.threshold_rule == "fixed":
        return OperatingPoint(float(config.threshold), "fixed")
    if not 0 < y.sum() < y.size:
        note = f"validation data have {int(y.sum())} positive of {y.size}: rule {config.threshold_rule} needs both classes"
        log.warning("%s; using the fixed threshold %.3f", note, config.threshold)
        return OperatingPoint(float(config.threshold), "fixed", note, int(y.size))
    return OperatingPoint(operating_threshold(config, y, np.asarray(scores_val, dtype=float)), config.threshold_rule, "", int(y.size))


def evaluate_binary(
    y_true: np.ndarray,
    scores: np.ndarray,
    config: EvaluateConfig,
    *,
    threshold: float | None = None,
    reads: Mapping[str, np.ndarray] | None = None,
    subsets: Mapping[str, np.ndarray] | None = None,
    figures_dir: Path | str | None = None,
    name: str = "model",
) -> dict[str, Any]:
    """Every binary statistic of one model on one test set.

    Args:
        y_true: labels 0/1 (1 = the positive class, e.g. covid19), shape (n,).
        scores: positive-class probabilities, shape (n,).
        config: the evaluate section (bootstrap size/seed/level, grid step, thresholds, bins ...).
        threshold: operating threshold; default :func:`operating_threshold` with the fixed rule's value.
        reads: reader name -> calls 0/1 on the same cases (Liang et al.'s experts).
        subsets: subset name -> boolean mask over the cases (e.g. {"S1": ..., "rtpcr_negative": ...});
            each gets its indices at the threshold and, when both classes are present, its AUROC.
        figures_dir: if given, ROC, PR, ROC band, boxplots and reliability PNGs are written there.
        name: the model's label in figures and tables.

    Returns:
        ``{"threshold", "indices" (name -> BootstrapResult), "readers" (reader -> index ->
        BootstrapResult), "mcnemar" (reader -> McNemarResult), "curve" (grid Curve), "auroc",
        "auprc", "roc_band", "thresholds_table", "reliability", "subsets", "figures" (caption ->
        path), "metrics" (nested plain numbers for the metrics JSON), "card" (metrics and tables for
        the model card)}``.
    """
    t = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    thr = float(config.threshold if threshold is None else threshold)
    boot = {
        "n_resamples": config.bootstrap,
        "seed": config.bootstrap_seed,
        "level": config.ci_level,
    }
    pred = binarize(s, thr).astype(int)
    indices = bootstrap_binary_indices(t, pred, **boot)
    both = 0 < t.sum() < t.size
    # a test set of one class has no ROC/PR curve (its indices at the threshold are still defined)
    curve: Curve | None = grid_curve(t, s, config.threshold_step) if both else None
    auroc_ci = bootstrap_auroc(t, s, **boot) if both else None
    band = roc_with_ci(t, s, step=config.threshold_step, **boot) if both else None
    rel = reliability(t, s, config.calibration_bins)
    table = thresholds_table(t, s, config.report_thresholds)
    reads = dict(reads or {})
    readers_ci = reader_indices(t, reads, **boot)
    mcnemar = compare_with_readers(t, pred, reads, exact_below=config.mcnemar_exact_below)
    subset_rows: dict[str, dict[str, float]] = {}
    for sub, mask in (subsets or {}).items():
        m = np.asarray(mask, dtype=bool)
        if m.shape != t.shape:
            raise DataError(f"subset {sub!r}: mask has shape {m.shape}, expected {t.shape}")
        row = indices_at_threshold(t[m], s[m], thr)
        row["auroc"] = auroc_exact(t[m], s[m]) if m.any() else float("nan")
        subset_rows[sub] = row

    metrics: dict[str, Any] = {
        "threshold": thr,
        "n": int(t.size),
        "n_positive": int(t.sum()),
        **{k: r.as_dict() for k, r in indices.items()},
        "auroc": auroc(curve) if both else float("nan"),
        "auroc_exact": auroc_exact(t, s) if both else float("nan"),
        "auroc_ci": auroc_ci.as_dict() if auroc_ci else None,
        "auprc": auprc(curve) if curve is not None else float("nan"),
        "auprc_exact": auprc_exact(t, s) if both else float("nan"),
        "ece": rel.ece,
        "readers": {r: {k: v.as_dict() for k, v in ci.items()} for r, ci in readers_ci.items()},
        "mcnemar_p": {r: m.p_value for r, m in mcnemar.items()},
        "subsets": subset_rows,
    }
    metrics = {k: v for k, v in metrics.items() if v is not None}

    figures: dict[str, Path] = {}
    if figures_dir is not None and both:
        out = Path(figures_dir)
        pts = reader_points(t, reads)
        figures["ROC"] = plot_roc({name: curve}, out / "roc.png", readers=pts)
        figures["Precision-recall (grey dashed: iso-F1)"] = plot_pr(
            {name: curve}, out / "pr.png", readers=pts
        )
        if band is not None:
            figures["ROC with 95% CI"] = plot_roc_band(
                band, out / "roc_ci.png", readers=pts, label=name
            )
        figures["Bootstrap distributions"] = plot_boxplots(
            {name: indices, **readers_ci}, out / "boxplots.png"
        )
        figures["Reliability"] = plot_reliability(rel, out / "reliability.png")

    card_metrics = {name: {k: r.as_dict() for k, r in indices.items()}}
    if auroc_ci is not None:
        card_metrics[name]["auroc"] = auroc_ci.as_dict()
    card_metrics[name]["auprc"] = metrics["auprc"]
    card_metrics.update(
        {r: {k: v.as_dict() for k, v in ci.items()} for r, ci in readers_ci.items()}
    )
    card_tables = {
        "Indices at several thresholds": table,
        "McNemar's test, model vs reader": [
            {"reader": r, **m.as_dict()} for r, m in mcnemar.items()
        ],
        "Subsets": [{"subset": k, **v} for k, v in subset_rows.items()],
    }
    return {
        "threshold": thr,
        "indices": indices,
        "readers": readers_ci,
        "mcnemar": mcnemar,
        "curve": curve,
        "auroc": auroc_ci,
        "auprc": metrics["auprc"],
        "roc_band": band,
        "thresholds_table": table,
        "reliability": rel,
        "subsets": subset_rows,
        "figures": figures,
        "metrics": metrics,
        "card": {"metrics": card_metrics, "tables": card_tables, "figures": figures},
    }
