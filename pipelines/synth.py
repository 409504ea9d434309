"""Stage `synth`: write the synthetic hybrid DICOM dataset (SPEC.md section 1) to data/raw/synthetic."""

from __future__ import annotations

import logging

from pipelines import load_stage_params, stage_main

OUT_DIR = "data/raw/synthetic"
log = logging.getLogger("pipelines.synth")


def main() -> None:
    params = load_stage_params("synth")
    from covidscan.data.synth import generate
    from covidscan.tracking.runs import log_artifact, log_metrics, stage_run

    with stage_run("synth", params.synth, experiment=params.experiment_name):
        summary = generate(params.synth, OUT_DIR)
        log_metrics({"n_xray": summary.n_xray, "n_ct": summary.n_ct, "n_files": summary.n_files})
        log_artifact(f"{OUT_DIR}/labels.csv", "synthetic")  # labels and centres only: no header field
        log_artifact(f"{OUT_DIR}/ground_truth.json", "synthetic")
    log.info("wrote %d X-ray and %d CT cases (%d files) to %s", summary.n_xray, summary.n_ct, summary.n_files, OUT_DIR)


if __name__ == "__main__":
    stage_main(main)
