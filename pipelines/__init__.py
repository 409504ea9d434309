"""DVC stage entry points: one thin module per stage (parse args -> load params -> call src -> write outs).

Run as ``python -m pipelines.<stage>`` from the project root (dvc.yaml does this).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from covidscan.environment import quiet_telemetry
from covidscan.errors import CovidscanError


def _mark_repro_failed() -> None:
    """The stage failed: mark this repro's MLflow parent run FAILED (best effort: the stage's own error
    is what the user must see)."""
    try:
        from covidscan.tracking.runs import mark_repro_failed

        mark_repro_failed()
    except Exception as err:  # noqa: BLE001 - never hide the stage's error behind a tracking one
        logging.getLogger("pipelines").warning("could not mark the repro's MLflow parent run FAILED: %s", err)


def stage_main(func: Callable[[], None]) -> None:
    """Run a stage: telemetry off, logging on, user errors as one line on stderr and exit code 2.

    A failing stage (any exception, a non-zero exit) also marks the repro's MLflow parent run FAILED,
    even when it failed before or after its :func:`~covidscan.tracking.runs.stage_run`.
    """
    quiet_telemetry()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import matplotlib  # the backend is chosen here, once, for every stage (figures are PNG files)
    matplotlib.use("Agg")
    try:
        func()
    except CovidscanError as err:
        _mark_repro_failed()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except BaseException as err:
        if not (isinstance(err, SystemExit) and err.code in (0, None)):
            _mark_repro_failed()
        raise
