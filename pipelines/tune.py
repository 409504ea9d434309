"""DVC stage `tune`: the Optuna study of each target (``tune.targets``; default the student per task).

    python -m pipelines.tune [--workers N]

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

from pipelines import load_stage_params, stage_main
from pipelines import training_inputs as ti

log = logging.getLogger("pipelines.tune")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing each study")
    args = parser.parse_args(argv)

    from covidscan.tracking.runs import log_study, stage_run
    from covidscan.tuning.objective import TuneData
    from covidscan.tuning.study import run_tuning

    params = load_stage_params("tune")  # the configured (untuned) values: the search starts from them
    with stage_run("tune", params.tune, experiment=params.run.experiment_name):
        path = run_tuning(params, data=TuneData(ti.PROCESSED, ti.SPLITS, ti.TEACHERS_DIR), workers=args.workers,
                          on_result=lambda r: log_study(f"tune {r.target}", r.entry, r.records, r.figures))  # fmt: skip
    log.info("wrote %s", path)


if __name__ == "__main__":
    stage_main(main)
