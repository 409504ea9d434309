"""DVC stage `aggregate_cv`: the teachers' out-of-fold predictions -> CV metrics and distillation weights.

    python -m pipelines.aggregate_cv [--teachers models/teachers] [--metrics metrics/cv.json]

Reads ``<teachers>/<task>/<TS>-f<k>.oof.parquet`` (empty markers of unconfigured folds are skipped) and
writes ``<teachers>/oof.parquet`` (all out-of-fold predictions), ``metrics/cv.json`` (DVC metrics: per
task and teacher the covid19-vs-rest AUROC of each fold, their mean and the pooled out-of-fold AUROC;
:func:`covidscan.training.teacher.aggregate_cv`) and ``<teachers>/cv.json`` (fold numbers + fold
AUROCs, in fold order, read by the distill stage for AUROC-weighted fusion / best-fold selection). A fold
whose validation part lacks a class has AUROC null (NaN in the weights file's consumer is replaced by
0.5, chance).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.aggregate_cv")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_path_options(p, "teachers")  # read the fold tables, write cv.json and oof.parquet there
    p.add_argument("--metrics", type=Path, default=layout.METRICS / "cv.json", help="the DVC metrics file")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from covidscan.tracking.runs import log_artifact, log_metrics, log_peak_rss, stage_run
    from covidscan.training.teacher import aggregate_cv, read_oof

    params = load_stage_params("aggregate_cv")
    with stage_run("aggregate_cv", params.models, experiment=params.run.experiment_name):
        oof = read_oof(args.teachers)
        result = aggregate_cv(oof)
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps({t: {k: v.as_dict() for k, v in d.items()} for t, d in result.items()}, indent=2, sort_keys=True) + "\n")
        weights = args.teachers / "cv.json"
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_text(json.dumps({t: {k: v.weights() for k, v in d.items()} for t, d in result.items()}, indent=2, sort_keys=True) + "\n")
        oof.to_parquet(args.teachers / "oof.parquet", index=False)
        for task, teachers in result.items():
            for teacher, m in teachers.items():
                log_metrics({f"{task}/{teacher}/mean_auroc": m.mean_auroc, f"{task}/{teacher}/oof_auroc": m.oof_auroc})
                log.info("%s %s: fold AUROCs %s, mean %s", task, teacher, list(m.fold_auroc), m.mean_auroc)
        log_artifact(args.metrics, "metrics")
        log_peak_rss()


if __name__ == "__main__":
    stage_main(main)
