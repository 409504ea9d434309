"""DVC stage entry points: one thin module per stage (parse args -> load params -> call src -> write outs).

Run as ``python -m pipelines.<stage>`` from the project root (dvc.yaml does this).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from covidscan.environment import quiet_telemetry
from covidscan.errors import CovidscanError


def stage_main(func: Callable[[], None]) -> None:
    """Run a stage: telemetry off, logging on, user errors as one line on stderr and exit code 2."""
    quiet_telemetry()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        func()
    except CovidscanError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
