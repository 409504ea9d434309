"""Fixtures of the annotation platform's tests: a real ingest folder (tiny DICOM with sentinel PHI in
every identifying tag and in the file names), a real SQLite store migrated by Alembic, accounts of
every role and the real FastAPI app (in-process through Starlette's TestClient, or served by uvicorn
on 127.0.0.1 for the browser test)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from covidscan.annotate.app import Settings, create_app
from covidscan.annotate.auth import create_user
from covidscan.annotate.cases import CaseLibrary
from covidscan.annotate.store import default_url, open_store
from covidscan.config import DataConfig, SourceSpec
from covidscan.data.ingest import ingest
from tests.data.ingest_fixtures import UID_ROOT, write_hospital_export
from tests.data.test_ingest import NAME_SENTINELS, PATIENT_SENTINEL, SALT

PASSWORD = "correct horse battery"
USERS = {  # name -> (role, slot, reads_as)
    "ann1": ("reader", "reader1", "Rad-5th"),
    "ann2": ("reader", "reader2", "Rad-3rd"),
    "senior": ("senior", None, None),
    "admin": ("admin", None, None),
}


def sentinel_cases() -> list[dict]:
    return [
        {"rel": f"dicom/{NAME_SENTINELS[0]}/{NAME_SENTINELS[1]}.dcm", "modality": "xray", "label": "covid19",
         "patient_id": PATIENT_SENTINEL, "study_uid": f"{UID_ROOT}.1", "sentinels": True, "centre": "centre_a"},
        {"rel": f"dicom/{NAME_SENTINELS[0]}/{NAME_SENTINELS[2]}", "modality": "ct", "label": "covid19",
         "patient_id": PATIENT_SENTINEL, "study_uid": f"{UID_ROOT}.2", "sentinels": True, "centre": "centre_a"},
        {"rel": "dicom/SNTLother_Smith/x.dcm", "modality": "xray", "label": "normal", "patient_id": "SNTLPID0002",
         "study_uid": f"{UID_ROOT}.4", "sentinels": True, "centre": "centre_b"},
    ]


@pytest.fixture(scope="session")
def ingest_dir(tmp_path_factory) -> Path:
    """An ingest folder of 2 X-rays and 1 CT series whose DICOM carry sentinel PHI."""
    root = tmp_path_factory.mktemp("annotate-data")
    export = write_hospital_export(root / "export", sentinel_cases())
    spec = SourceSpec(name="hosp", adapter="hospital", location=str(export))
    ingest([spec], DataConfig(sources=[spec]), root / "ingest", salt=SALT, progress=False)
    return root / "ingest"


@dataclass
class Platform:
    app: object
    library: CaseLibrary
    db_url: str
    export_dir: Path

    def ids(self, kind: str) -> list[str]:
        m = self.library.manifest
        return list(m.loc[m["kind"] == kind, "record_id"])


@pytest.fixture(scope="session", autouse=True)
def fast_argon2():
    """Argon2id with its smallest cost for the tests (the hashing is real; only time_cost and memory_cost
    differ from argon2-cffi's defaults, which the platform uses): a login verifies in milliseconds."""
    from argon2 import PasswordHasher

    from covidscan.annotate import auth

    kept = auth._hasher
    auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    auth._hasher = kept


@pytest.fixture(scope="session")
def accounts_db(tmp_path_factory) -> Path:
    """A store with the accounts of :data:`USERS` (made once: Argon2 hashing takes a while on purpose)."""
    path = tmp_path_factory.mktemp("annotate-db") / "accounts.db"
    with open_store(default_url(path))() as db:
        for name, (role, slot, reads_as) in USERS.items():
            create_user(db, name, PASSWORD, role, slot, reads_as)
    return path


@pytest.fixture
def platform(ingest_dir, accounts_db, tmp_path) -> Platform:
    shutil.copyfile(accounts_db, tmp_path / "annotate.db")
    url = default_url(tmp_path / "annotate.db")
    sessions = open_store(url)
    library = CaseLibrary(ingest_dir)
    settings = Settings(secret="test-secret-" + "0" * 40, export_dir=tmp_path / "export", max_failures=3)
    return Platform(create_app(library, sessions, settings), library, url, tmp_path / "export")


def login(client, username: str, password: str = PASSWORD):
    """Log in through the real form (GET /login for the CSRF token, then POST); returns the response."""
    import re

    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token}, follow_redirects=False)


def csrf_of(client) -> str:
    import re

    return re.search(r'data-csrf="([^"]+)"', client.get("/").text).group(1)

