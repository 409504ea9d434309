"""Shared test setup: telemetry off, the project root, and the optional real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from covidscan.environment import quiet_telemetry

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata-dev"

quiet_telemetry()
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def realdata() -> Path:
    """The real public images folder; skips the test when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata-dev is absent")
    return REALDATA
