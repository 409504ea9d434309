"""Stage `configure`: validate params.yaml, apply the profile, write build/params/<stage>.json.

Runs first and in seconds, so a typo in params.yaml fails `dvc repro` at once with the key named.
Each downstream stage depends only on its own effective file: a profile switch reruns exactly the
stages whose resolved parameters changed.

    python -m pipelines.configure            # every stage except those that use the tuned values
    python -m pipelines.configure --tuned    # stage `configure_tuned`: those stages (distill), after `tune`

The tuned stages' files are written by a second stage because they depend on params/tuned.yaml, an
output of `tune`, which itself runs after `configure` (one stage doing both would be a cycle). With
``tune.use_tuned`` their ``tune.tuned`` holds the tuned values, so switching it reruns exactly them.
"""

from __future__ import annotations

import argparse
import logging

from covidscan.config import STAGE_SECTIONS, load_params, write_effective
from pipelines import stage_main

log = logging.getLogger("pipelines.configure")

TUNED_STAGES = ("distill",)  # stages that train with params/tuned.yaml when tune.use_tuned is true


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tuned", action="store_true", help=f"write only {', '.join(TUNED_STAGES)}, with params/tuned.yaml applied")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_params()  # fails here, before MLflow is even imported, on a bad key
    if args.tuned:
        from covidscan.tuning.tuned import resolve_tuned

        params, stages = resolve_tuned(params), list(TUNED_STAGES)
    else:
        stages = [s for s in STAGE_SECTIONS if s not in TUNED_STAGES]
    from covidscan.tracking.runs import log_dict, stage_run

    name = "configure_tuned" if args.tuned else "configure"
    with stage_run(name, params, experiment=params.run.experiment_name):
        paths = write_effective(params, stages=stages)
        log_dict(params.model_dump(mode="json"), f"params/{'tuned' if args.tuned else 'resolved'}.json")
    log.info("profile '%s': wrote %d effective parameter files", params.profile, len(paths))


if __name__ == "__main__":
    stage_main(main)
