"""Shared test setup: telemetry off, the project root, and the optional real-data folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from covidscan.environment import quiet_telemetry

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata-dev"

quiet_telemetry()
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The library never chooses matplotlib's backend (the entry points do); tests that draw use Agg.
os.environ.setdefault("MPLBACKEND", "Agg")

# No test may write into the developer's own MLflow store (./mlflow.db): every process the tests start
# inherits a throw-away store unless the test names its own.
_STORE = Path(tempfile.mkdtemp(prefix="covidscan-tests-mlflow-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_STORE / 'mlflow.db'}"
os.environ["COVIDSCAN_ARTIFACT_ROOT"] = (_STORE / "mlartifacts").as_uri()


@pytest.fixture
def realdata() -> Path:
    """The real public images folder; skips the test when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata-dev is absent")
    return REALDATA


def write_stage_params(root: Path, stage: str, raw: dict | None = None) -> Path:
    """``root/build/params/<stage>.json`` from a params.yaml-like mapping, as the `configure` stage writes it
    (the stages read only their effective file)."""
    from covidscan.config import parse_params, write_effective

    (path,) = write_effective(parse_params(raw or {}), Path(root) / "build" / "params", stages=[stage])
    return path


def stage_exit_code(main, argv: list[str]) -> int:
    """Run a stage's ``main(argv)`` as its ``__main__`` does (through :func:`pipelines.stage_main`): the exit code."""
    from pipelines import stage_main

    try:
        stage_main(lambda: main(argv))
    except SystemExit as exit_info:
        return 0 if exit_info.code is None else exit_info.code
    return 0
