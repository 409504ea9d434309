"""DVC stage `aggregate_cv`: the teachers' out-of-fold predictions -> CV metrics and distillation weights.

    python -m pipelines.aggregate_cv

Reads ``models/teachers/<task>/<TS>-f<k>.oof.parquet`` (empty markers of unconfigured folds are
skipped) and writes ``models/teachers/oof.parquet`` (all out-of-fold predictions), ``metrics/cv.json``
(DVC metrics: per task and teacher the covid19-vs-rest AUROC of each fold, their mean and the pooled
out-of-fold AUROC) and ``models/teachers/cv.json`` (fold numbers + fold AUROCs, in fold order, read by
the distill stage for AUROC-weighted fusion / best-fold selection). A fold whose validation part lacks
a class has AUROC null (NaN in the weights file's consumer is replaced by 0.5, chance).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from pipelines import load_stage_params, stage_main
from pipelines import training_inputs as ti

log = logging.getLogger("pipelines.aggregate_cv")

METRICS = Path("metrics/cv.json")
WEIGHTS = ti.TEACHERS_DIR / "cv.json"
OOF_ALL = ti.TEACHERS_DIR / "oof.parquet"


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def aggregate(oof: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """task -> teacher -> {folds, fold_auroc, mean_auroc, oof_auroc, n}."""
    from covidscan.evaluation.curves import auroc_exact

    positive = f"p_{ti.CLASSES[ti.POSITIVE]}"
    out: dict[str, dict[str, dict]] = {}
    for (task, teacher), rows in oof.groupby(["task", "teacher"], sort=True):
        folds = sorted(int(f) for f in rows["fold"].unique())
        aurocs = [auroc_exact((g["y"] == ti.POSITIVE).to_numpy(), g[positive].to_numpy()) for g in (rows[rows["fold"] == f] for f in folds)]
        finite = [a for a in aurocs if math.isfinite(a)]
        pooled = auroc_exact((rows["y"] == ti.POSITIVE).to_numpy(), rows[positive].to_numpy())
        out.setdefault(str(task), {})[str(teacher)] = {
            "folds": folds,
            "fold_auroc": [_clean(a) for a in aurocs],
            "mean_auroc": _clean(sum(finite) / len(finite)) if finite else None,
            "oof_auroc": _clean(pooled),
            "n": int(len(rows)),
        }
    return out


def main() -> None:
    from covidscan.tracking.runs import log_artifact, log_metrics, log_peak_rss, stage_run

    params = load_stage_params("aggregate_cv")
    with stage_run("aggregate_cv", params.models, experiment=params.run.experiment_name):
        tables = []
        for path in sorted(ti.TEACHERS_DIR.glob("*/*.oof.parquet")):
            table = pd.read_parquet(path)
            if table.empty:
                log.info("%s: empty (fold not configured), skipped", path)
                continue
            tables.append(table)
        oof = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["task", "teacher", "fold", "y", f"p_{ti.CLASSES[ti.POSITIVE]}"])
        result = aggregate(oof) if tables else {}
        METRICS.parent.mkdir(parents=True, exist_ok=True)
        METRICS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        WEIGHTS.write_text(json.dumps({t: {k: {"folds": v["folds"], "fold_auroc": v["fold_auroc"]} for k, v in d.items()} for t, d in result.items()}, indent=2, sort_keys=True) + "\n")
        oof.to_parquet(OOF_ALL, index=False)
        for task, teachers in result.items():
            for teacher, m in teachers.items():
                log_metrics({f"{task}/{teacher}/mean_auroc": m["mean_auroc"], f"{task}/{teacher}/oof_auroc": m["oof_auroc"]})
                log.info("%s %s: fold AUROCs %s, mean %s", task, teacher, m["fold_auroc"], m["mean_auroc"])
        log_artifact(METRICS, "metrics")
        log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
