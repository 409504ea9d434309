"""DVC stage `evaluate@<experiment>`: a saved model on an experiment's test set (SPEC.md section 5).

    python -m pipelines.evaluate --experiment A [--params build/params/evaluate.json] [--models-dir models]
        [--processed data/processed] [--splits data/splits/splits.parquet] [--ingest data/interim/ingest]
        [--ground-truth data/raw/synthetic/ground_truth.json] [--metrics-dir metrics/evaluate] [--reports-dir reports/evaluate]

Reads ``models/<experiment.model>.pt``, ``data/processed``, ``data/splits/splits.parquet`` and
``data/interim/ingest`` (manifest, reads, annotations, clinical). Writes ``metrics/evaluate/<exp>.json``
(flat, for ``dvc metrics show``), ``reports/evaluate/<exp>/roc.csv`` + ``pr.csv`` (``dvc plots``), the
figures (``reports/evaluate/<exp>/figures/``) and ``reports/evaluate/<exp>/model_card.html``; everything is logged to the MLflow run
``evaluate@<exp>``.

What is computed (classifiers, three-class experiments, the baselines comparison, CNNRF's regression
indices): :mod:`covidscan.evaluation.experiment_run`; this stage passes its paths and logs the outputs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from covidscan.evaluation.experiment_run import EvaluationInputs, evaluate_experiment
from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.evaluate")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--stage", default=None, help="DVC stage name for the MLflow run (default: evaluate@<experiment>)")
    p.add_argument("--params", type=Path, default=None, help="the stage's effective params (default: build/params/evaluate.json)")
    add_path_options(p, "processed", "splits", "ingest")
    p.add_argument("--ground-truth", type=Path, default=layout.RAW_SYNTHETIC / "ground_truth.json",
                   help="the synthetic generator's ground truth (its stated correlations), used when present")  # fmt: skip
    p.add_argument("--models-dir", type=Path, default=layout.MODELS)
    p.add_argument("--metrics-dir", type=Path, default=layout.METRICS / "evaluate")
    p.add_argument("--reports-dir", type=Path, default=layout.REPORTS / "evaluate")
    p.add_argument("--max-gradcam", type=int, default=None, help="Grad-CAM overlays for at most this many test cases (default all)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_stage_params("evaluate", args.params)
    from covidscan.evaluation.report import flatten_metrics
    from covidscan.tracking.runs import log_artifact, log_metrics, stage_run

    with stage_run(args.stage or f"evaluate@{args.experiment}", params.evaluate, experiment=params.run.experiment_name):
        inputs = EvaluationInputs.from_ingest(args.processed, args.splits, args.ingest, args.ground_truth)
        out = evaluate_experiment(params, args.experiment, inputs, args.models_dir, args.metrics_dir, args.reports_dir, args.max_gradcam)
        flat = {k: float(v) for k, v in flatten_metrics(out.metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        log_metrics({k.replace("+", "_"): v for k, v in flat.items()})
        log_artifact(out.metrics_path, "metrics")
        for path in sorted(out.out_dir.rglob("*")):
            if path.is_file():
                rel = path.parent.relative_to(out.out_dir)
                log_artifact(path, "report" if str(rel) == "." else f"report/{rel}")
    log.info("evaluate@%s: wrote %s and %s", args.experiment, out.metrics_path, out.card_path)


if __name__ == "__main__":
    stage_main(main)
