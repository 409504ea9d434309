"""A real PostgreSQL server for the scaling tests (one per test session and xdist worker).

Skips only where no PostgreSQL binaries exist; ``make test`` (and ``.ci/run``) install Debian's
``postgresql`` package when ``initdb`` is missing, so in CI these tests run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scaling.postgres import Postgres, postgres_bin_dir, start_postgres

NO_POSTGRES = "PostgreSQL server binaries (initdb, pg_ctl) not found: `make test` installs them (apt-get install postgresql); see docs/SCALING.md"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (stopped and removed at the end of the session)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(NO_POSTGRES)
    pg = start_postgres(bin_dir)
    try:
        yield pg
    finally:
        pg.stop()
