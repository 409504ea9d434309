"""DVC stage `ingest`: every source in params.data.sources -> data/interim/ingest/.

    python -m pipelines.ingest [--params params.yaml] [--out data/interim/ingest]

Reads the typed params, loads the salt (data.deid: environment variable or a file outside the
repository), runs :func:`covidscan.data.ingest.ingest` and prints the per-source summary.
"""

from __future__ import annotations

import argparse
import logging
import sys

from covidscan.config import load_params
from covidscan.environment import quiet_telemetry
from covidscan.errors import CovidscanError

OUT_DIR = "data/interim/ingest"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--profile", default=None, help="profile to apply")
    parser.add_argument("--out", default=OUT_DIR, help="ingest folder (DVC output)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    quiet_telemetry()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from covidscan.data.ingest import ingest

    try:
        params = load_params(args.params, profile=args.profile)
        summary = ingest(params.data.sources, params.data, args.out, progress=not args.no_progress)
    except CovidscanError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    # TODO(integrator): log_input — record the manifest as an MLflow dataset input here
    # (summary.manifest_sha256 is the digest of manifest.parquet; summary.per_source the counts).
    print(summary.per_source.to_string(index=False))
    print(f"{summary.n_records} records, {summary.n_quarantined} quarantined, manifest sha256 {summary.manifest_sha256[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
