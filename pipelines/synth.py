"""Stage `synth`: write the synthetic hybrid DICOM dataset (SPEC.md section 1) to data/raw/synthetic.

    python -m pipelines.synth [--out data/raw/synthetic]

Only when ``data.sources`` declares a ``synthetic`` source; otherwise (a team's real sources only) the
output folder is left empty, in seconds, and nothing is generated.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from pipelines import layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.synth")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=layout.RAW_SYNTHETIC, help="the dataset's folder (the DVC output)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_stage_params("synth")
    from covidscan.data.synth import generate
    from covidscan.tracking.runs import log_artifact, log_metrics, stage_run

    if not any(source.adapter == "synthetic" for source in params.data.sources):  # real sources only: nothing to generate
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        log.info("no synthetic source in data.sources: %s left empty (the DVC output)", args.out)
        return
    with stage_run("synth", params.synth, experiment=params.experiment_name):
        summary = generate(params.synth, str(args.out))
        log_metrics({"n_xray": summary.n_xray, "n_ct": summary.n_ct, "n_files": summary.n_files})
        log_artifact(args.out / "labels.csv", "synthetic")  # labels and centres only: no header field
        log_artifact(args.out / "ground_truth.json", "synthetic")
    log.info("wrote %d X-ray and %d CT cases (%d files) to %s", summary.n_xray, summary.n_ct, summary.n_files, args.out)


if __name__ == "__main__":
    stage_main(main)
