"""Stage `configure`: validate params.yaml, apply the profile, write build/params/<stage>.json.

Runs first and in seconds, so a typo in params.yaml fails `dvc repro` at once with the key named.
Each downstream stage depends only on its own effective file: a profile switch reruns exactly the
stages whose resolved parameters changed.
"""

from __future__ import annotations

import logging

from covidscan.config import load_params, write_effective
from pipelines import stage_main

log = logging.getLogger("pipelines.configure")


def main() -> None:
    params = load_params()  # fails here, before MLflow is even imported, on a bad key
    from covidscan.tracking.runs import log_dict, stage_run

    with stage_run("configure", params, experiment=params.run.experiment_name):
        paths = write_effective(params)
        log_dict(params.model_dump(mode="json"), "params/resolved.json")
    log.info("profile '%s': wrote %d effective parameter files", params.profile, len(paths))


if __name__ == "__main__":
    stage_main(main)
