"""Stage `ingest`: every source in params.data.sources -> data/interim/ingest/.

    python -m pipelines.ingest [--params build/params/ingest.json] [--out data/interim/ingest] [--no-progress]

Reads the typed params, loads the salt (data.deid: an environment variable or a file outside the
repository), runs :func:`covidscan.data.ingest.ingest` and prints the per-source summary. The folder
holds manifest.parquet, clinical/annotations/reads/quarantine/summary.parquet, report.json and arrays/.
Rows held back (missing or unreadable file, unknown label) are counted per source and reason in the
printed summary, report.json and the MLflow run (``ingest/report.json``, metric ``n_quarantined``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import logging

from pipelines import layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.ingest")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.ingest", description="Ingest and de-identify every source.")
    p.add_argument("--params", type=Path, default=None, help="the stage's effective params (default: build/params/ingest.json)")
    p.add_argument("--out", type=Path, default=layout.INGEST, help="ingest folder (the DVC output)")
    p.add_argument("--raw", type=Path, default=layout.RAW,
                   help="the sources' folder (dvc.yaml's dependency of ingest): a source elsewhere is read, but a change to it does not rerun ingest")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_stage_params("ingest", args.params)
    from covidscan.data.ingest import ingest

    from covidscan.tracking.runs import log_artifact, log_dict, log_metrics, log_table_input, stage_run

    raw = args.raw.resolve()
    for source in params.data.sources:
        location = Path(source.location).expanduser().resolve()
        if raw != location and raw not in location.parents:
            log.warning("data.sources[%s]: %s is outside %s, which DVC tracks for ingest: a change there will not rerun ingest "
                        "(bring it under %s with `dvc add` or `dvc import-url`; docs/REALDATA.md)", source.name, source.location, args.raw, args.raw)
    with stage_run("ingest", params.data, experiment=params.run.experiment_name):
        summary = ingest(params.data.sources, params.data, str(args.out), progress=not args.no_progress)
        log_table_input(args.out / "manifest.parquet", name="manifest", context="ingest")
        log_artifact(args.out / "summary.parquet", "ingest")
        log_dict({"skipped": summary.skipped}, "ingest/skipped.json")
        log_dict(summary.report(), "ingest/report.json")
        log_metrics({"n_records": summary.n_records, "n_quarantined": summary.n_quarantined})
    print(summary.per_source.to_string(index=False))
    print(f"{summary.n_records} records, {summary.n_quarantined} quarantined, manifest sha256 {summary.manifest_sha256[:12]}")
    for name, reasons in summary.quarantined.items():
        if reasons:
            print(f"  {name}: quarantined " + ", ".join(f"{n} {reason}" for reason, n in reasons.items()))
    for name, defaults in summary.defaulted.items():
        if defaults:
            print(f"  {name}: labels by default " + ", ".join(f"{n} {rule}" for rule, n in defaults.items()))
    log.info("skipped by the adapters: %s", summary.skipped)


if __name__ == "__main__":
    stage_main(main)
