"""DVC stage `tune`: the Optuna study of each target (``tune.targets``; default the student per task).

    python -m pipelines.tune [--workers N] [--processed data/processed] [--splits data/splits/splits.parquet]
        [--teachers models/teachers] [--reports reports/tuning]

Objective: the cross-validated validation AUROC on the train-val folds only (covidscan.tuning). Writes
``params/tuned.yaml`` (the best values per target, or the configured ones while ``tune.n_trials`` is 0:
the demo and tiny profiles keep the stage frozen, so `dvc repro` never starts a long search by accident)
and ``reports/tuning/<target>/*.png``; logs the study as a nested MLflow run with one run per trial.
The study lives in its storage (``tune.storage`` / $OPTUNA_STORAGE, default build/optuna/journal.log), so
a killed stage resumes. See docs/TUNING.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.tune")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing each study")
    add_path_options(p, "processed", "splits", "teachers")
    p.add_argument("--reports", type=Path, default=layout.REPORTS / "tuning", help="the studies' figures (<target>/*.png)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from covidscan.tracking.runs import log_study, stage_run
    from covidscan.tuning.objective import TuneData
    from covidscan.tuning.study import run_tuning

    params = load_stage_params("tune")  # the configured (untuned) values: the search starts from them
    with stage_run("tune", params.tune, experiment=params.run.experiment_name):
        path = run_tuning(params, data=TuneData(args.processed, args.splits, args.teachers), workers=args.workers, reports=args.reports,
                          on_result=lambda r: log_study(f"tune {r.target}", r.entry, r.records, r.figures))  # fmt: skip
    log.info("wrote %s", path)


if __name__ == "__main__":
    stage_main(main)
