"""DVC stage `validate`: Great Expectations data-quality gates on the ingest outputs and the splits.

    python -m pipelines.validate [--params build/params/validate.json]
        [--ingest data/interim/ingest] [--splits data/splits/splits.parquet | --no-splits]
        [--out reports/validation]

Reads params `subsets`, `splits`, `validate`; writes `reports/validation/summary.json` (also when
validation fails) and the GE data docs `reports/validation/docs/index.html`. On failure prints the
readable summary (suite, expectation, column, offending values) to stderr as `error: ...` and exits 2
(pipelines.stage_main).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines import add_path_options, layout, load_stage_params, stage_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=Path, default=None, help="the stage's effective params (default: build/params/validate.json)")
    add_path_options(p, "ingest", "splits")
    p.add_argument("--no-splits", action="store_true", help="validate the ingest outputs only")
    p.add_argument("--out", type=Path, default=layout.REPORTS / "validation", help="summary.json and the data docs")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from covidscan.data.splits import read_splits
    from covidscan.errors import ValidationFailed
    from covidscan.validation import validate

    summary_path = args.out / "summary.json"
    params = load_stage_params("validate", args.params)
    splits = None if args.no_splits else read_splits(args.splits)
    args.out.mkdir(parents=True, exist_ok=True)
    from covidscan.tracking.runs import log_artifact, log_metrics, stage_run

    with stage_run("validate", params.validate, experiment=params.experiment_name):
        report = validate(
            args.ingest, params.validate, splits=splits, splits_cfg=params.splits,
            subset_names=list(params.subsets) or None, docs_dir=args.out / "docs", raise_on_failure=False,
        )  # fmt: skip
        summary_path.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        log_artifact(summary_path, "validation")
        log_artifact(args.out / "docs", "validation/data_docs")
        log_metrics({"validation_success": float(report.success), "n_failures": float(len(report.failures))})
    # failed expectations are a result of the run, not an error in it: the run has ended FINISHED
    if not report.success:
        raise ValidationFailed(report.summary())
    print(report.summary(), file=sys.stderr)


if __name__ == "__main__":
    stage_main(main)
