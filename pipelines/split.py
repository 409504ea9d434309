"""DVC stage `split`: ingest manifest -> patient-grouped, near-duplicate-aware splits.

    python -m pipelines.split [--params build/params/split.json]
        [--ingest data/interim/ingest] [--out data/splits]

Reads params `run.seed`, `subsets`, `splits`; writes `data/splits/splits.parquet` (record_id, subset,
part, fold, group_id, label, binary_label, yao_subset) and `data/splits/summary.json`.
A user-causable problem is one `error:` line on stderr and exit code 2 (pipelines.stage_main).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines import add_path_options, layout, load_stage_params, stage_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=Path, default=None, help="the stage's effective params (default: build/params/split.json)")
    add_path_options(p, "ingest")
    p.add_argument("--out", type=Path, default=layout.SPLITS, help="the splits folder (splits.parquet, summary.json)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from covidscan.data.splits import split_manifest, write_splits
    from covidscan.errors import ConfigError
    from covidscan.validation.tables import read_ingest

    params = load_stage_params("split", args.params)
    if not params.subsets:
        raise ConfigError("params.yaml: 'subsets' is empty; declare the sub-datasets (SPEC.md section 1)")
    tables = read_ingest(args.ingest)
    result = split_manifest(
        tables.manifest, tables.root, params.subsets, params.splits, params.run.seed,
        clinical=tables.clinical, annotations=tables.annotations,
    )  # fmt: skip
    from covidscan.tracking.runs import log_artifact, log_table_input, stage_run

    with stage_run("split", params.splits, experiment=params.run.experiment_name):
        table_path, summary_path = write_splits(result, args.out)
        log_table_input(table_path, name="splits", context="split")
        log_artifact(summary_path, "split")
    logging.getLogger("pipelines.split").info("wrote %s and %s", table_path, summary_path)


if __name__ == "__main__":
    stage_main(main)
