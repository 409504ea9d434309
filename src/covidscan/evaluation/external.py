"""External validation: a trained classifier on a new source (ingest -> preprocess -> indices -> report).

Used by ``covidscan evaluate-external``. The source may hold several kinds of record (X-rays and CT
slices in one CSV manifest): the model is scored on the records its card's input kind takes (an X-ray
model, ``image2d``: the ``xray`` records; a CT-slice model, ``ct_slice2d``: the CT slices published as
images; a CT-stack or 3D model: the CT series), and the report counts the records left out by kind.
The source is ingested and preprocessed into a working folder
with the very functions the pipeline uses (:func:`covidscan.data.ingest.ingest`,
:func:`covidscan.preprocess.cache.preprocess_manifest`); the model is run through
:func:`covidscan.evaluation.experiment.run_model`, and the indices with bootstrap CIs, the curves, the
readers (when the source has reads) and the per-source/per-centre breakdown are written to ``out_dir``
with a model card. No MLflow here: the CLI wraps the call in its run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covidscan.config import Params, SourceSpec
from covidscan.errors import DataError

log = logging.getLogger(__name__)


def parse_source(text: str, name: str = "external") -> SourceSpec:
    """``<adapter>:<location>`` -> a :class:`SourceSpec` (e.g. ``hospital:/data/export``).

    Raises:
        ConfigError: the text has no adapter or names an unknown one.
    """
    from pydantic import ValidationError

    from covidscan.errors import ConfigError

    adapter, sep, location = text.partition(":")
    if not sep or not adapter or not location:
        raise ConfigError(f"--source {text!r}: expected <adapter>:<location>, e.g. hospital:/data/export")
    try:
        return SourceSpec(name=name, adapter=adapter, location=location)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(f"--source {text!r}: {err.errors()[0]['msg']}") from None


def breakdown(records: pd.DataFrame, scores: np.ndarray, threshold: float, column: str) -> list[dict[str, Any]]:
    """Indices at ``threshold`` and AUROC per value of ``column`` (per source, per centre); NaN AUROC for one class."""
    from covidscan.evaluation.curves import auroc_exact
    from covidscan.evaluation.metrics import indices_at_threshold

    rows = []
    for value, idx in records.groupby(column).indices.items():
        t, s = records["y"].to_numpy()[idx], scores[idx]
        row = {column: str(value), **indices_at_threshold(t, s, threshold)}
        row["auroc"] = auroc_exact(t, s) if 0 < t.sum() < t.size else float("nan")
        rows.append(row)
    return rows


def evaluate_external(
    model: Any,
    source: SourceSpec,
    params: Params,
    out_dir: str | Path,
    work_dir: str | Path,
    *,
    positive: Sequence[str] = ("covid19",),
    salt: bytes | None = None,
    preprocess_origin: str = "",
) -> dict[str, Any]:
    """Ingest, preprocess and evaluate one source; write metrics JSON, curves, figures and the card.

    Args:
        model: a classifier carrying a ``card`` (class labels, input kind, threshold).
        source: the source to read.
        params: the parameters (``data`` for ingest, ``preprocess`` as the model was trained, ``evaluate``);
            the CLI puts the registered version's preprocessing in
            (:func:`covidscan.tracking.registry.recorded_preprocess`).
        out_dir: where the report goes.
        work_dir: scratch folder for the ingested and preprocessed data.
        positive: the positive classes; every other label in the source is negative.
        salt: pseudonymisation salt (default: the configured one).
        preprocess_origin: where ``params.preprocess`` came from, for the report.

    Returns:
        ``{"metrics", "metrics_path", "card_path", "n"}``.
    """
    from covidscan.data.ingest import ingest
    from covidscan.evaluation.curves import grid_curve
    from covidscan.evaluation.experiment import class_scores, run_model, usable_records
    from covidscan.evaluation.report import write_curve_csv, write_metrics_json, write_model_card
    from covidscan.evaluation.summary import evaluate_binary
    from covidscan.preprocess.cache import preprocess_manifest

    card = getattr(model, "card", None)
    if card is None or card.task != "classification":
        raise DataError("evaluate-external needs a covidscan classifier (a model with a classification card)")
    out, work = Path(out_dir), Path(work_dir)
    ingest_dir, processed = work / "ingest", work / "processed"
    ingest([source], params.data, ingest_dir, salt=salt, progress=False)
    manifest = pd.read_parquet(ingest_dir / "manifest.parquet")
    if manifest.empty:
        raise DataError(f"{source.location}: no record was ingested")
    index = preprocess_manifest(manifest, ingest_dir, params.preprocess, processed, cache_dir=work / "cache")
    facts = [c for c in ("source", "centre", "rtpcr_initial", "rows", "cols", "n_slices", "spacing_slice") if c not in index.columns]
    records = index.merge(manifest[["record_id", *facts]], on="record_id").sort_values("record_id").reset_index(drop=True)
    records["y"] = records["label"].isin(positive).astype(int)
    kinds_in_source = Counter(records["input_kind"].astype(str))
    records = usable_records(records, card.input_spec.kind)
    left_out = dict(sorted((kinds_in_source - Counter(records["input_kind"].astype(str))).items()))
    outs = run_model(model, records, processed, params.preprocess)
    negative = sorted(set(records["label"]) - set(positive))
    scores = class_scores(outs.outputs, card.class_labels, positive, negative)
    y = records["y"].to_numpy()
    reads_path = ingest_dir / "reads.parquet"
    reads: dict[str, np.ndarray] = {}
    if reads_path.is_file():
        table = pd.read_parquet(reads_path)
        for reader, grp in table.groupby("reader"):
            calls = grp.set_index("record_id")["read"]
            if records["record_id"].isin(calls.index).all():
                reads[str(reader)] = calls.loc[records["record_id"]].to_numpy().astype(int)
    result = evaluate_binary(y, scores, params.evaluate, threshold=float(card.threshold), reads=reads, figures_dir=out / "figures", name=card.arch)
    if 0 < y.sum() < y.size:
        curve = grid_curve(y, scores, params.evaluate.threshold_step)
        write_curve_csv(curve, "roc", out / "roc.csv")
        write_curve_csv(curve, "pr", out / "pr.csv")
    per_source = breakdown(records, scores, float(card.threshold), "source")
    per_centre = breakdown(records, scores, float(card.threshold), "centre")
    metrics = dict(result["metrics"])
    metrics["per_source"] = {r["source"]: {k: r[k] for k in ("sensitivity", "specificity", "f1", "auroc", "n")} for r in per_source}
    metrics["per_centre"] = {r["centre"]: {k: r[k] for k in ("sensitivity", "specificity", "f1", "auroc", "n")} for r in per_centre}
    metrics["time_per_case_s"] = float(outs.seconds.mean())
    metrics["input_kind"] = card.input_spec.kind  # the records scored: those this kind takes
    metrics["left_out"] = left_out  # preprocessed input kind -> records of the source this model cannot take
    metrics["preprocess"] = params.preprocess.model_dump(mode="json")  # what the source was preprocessed with
    metrics_path = write_metrics_json(metrics, out / "metrics.json")
    tables = {**result["card"]["tables"], "Per source": per_source, "Per centre": per_centre}
    card_path = write_model_card(
        out / "model_card.html",
        model_name=f"{card.arch}, external validation on {source.adapter}",
        description=f"{card.arch} at its operating threshold {card.threshold:.3f} on an external source.",
        data_summary={
            "cases": len(records),
            "model input": card.input_spec.kind,
            "left out (other input kinds)": ", ".join(f"{k}: {v}" for k, v in sorted(left_out.items())) or "none",
            "positives": int(y.sum()),
            "classes": ", ".join(f"{k}: {v}" for k, v in records["label"].value_counts().sort_index().items()),
            "sources": ", ".join(sorted(records["source"].astype(str).unique())),
        },
        metrics=result["card"]["metrics"],
        figures=result["figures"],
        tables=tables,
        extra={"preprocessing": params.preprocess.model_dump_json(), "preprocessing from": preprocess_origin or "the given parameters"},
    )
    return {"metrics": metrics, "metrics_path": metrics_path, "card_path": card_path, "n": len(records)}
