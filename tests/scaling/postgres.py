"""A throwaway PostgreSQL server and an MLflow tracking server on it, for the tests (docs/SCALING.md).

:func:`start_postgres` runs Debian's (or any) PostgreSQL binaries on a fresh cluster in a temporary
folder: ``initdb`` (trust authentication, no fsync), ``pg_ctl start`` on a free 127.0.0.1 port with the
unix socket in the same folder, ``pg_ctl stop -m immediate`` and the folder removed by :meth:`Postgres.stop`.
PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres`` user (the
Debian package creates it), else to ``nobody``.

:func:`start_mlflow_server` runs ``mlflow server`` with a PostgreSQL backend store and a served artifact
store (``--serve-artifacts --artifacts-destination``) on a free port, as a team would run it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.serving.server import free_port, stop_tree

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
DB_USER = "covidscan"


def postgres_bin_dir() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _owner() -> pwd.struct_passwd | None:
    """The unprivileged account that runs the cluster when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL")


@dataclass
class Postgres:
    """A running throwaway cluster: ``url(db)`` gives a SQLAlchemy URL for one of its databases."""

    bin_dir: Path
    root: Path
    port: int
    owner: pwd.struct_passwd | None
    databases: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []} if self.owner else {}
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=self.root, **kwargs)  # type: ignore[arg-type]
        if proc.returncode != 0:
            log = (self.root / "server.log").read_text()[-3000:] if (self.root / "server.log").is_file() else ""
            raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}")
        return proc

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        self._run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER, name)
        self.databases.append(name)
        return self.url(name)

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` and remove the cluster's folder."""
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate", "-w", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(bin_dir: Path) -> Postgres:
    """initdb + pg_ctl start of a new cluster in a new temporary folder (see the module docstring)."""
    owner = _owner()
    root = Path(tempfile.mkdtemp(prefix="covidscan-pg-"))  # directly under /tmp: the owner must reach it
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    pg = Postgres(bin_dir, root, free_port(), owner)
    try:
        pg._run(str(bin_dir / "initdb"), "-D", str(pg.data), "-U", DB_USER, "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale")
        options = f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        pg._run(str(bin_dir / "pg_ctl"), "-D", str(pg.data), "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60", "start", timeout=90)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return pg


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """Stop the server and the workers it started."""
        stop_tree(self.process)


def start_mlflow_server(backend_url: str, artifacts: Path, log: Path, timeout_s: float = 180.0) -> MlflowServer:
    """``mlflow server`` on ``backend_url`` (PostgreSQL) serving the artifacts in ``artifacts``; returns when /health answers."""
    port = free_port()
    artifacts.mkdir(parents=True, exist_ok=True)
    # job execution (GenAI evaluation jobs: a runner and seven huey consumers) is not used here
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [MLFLOW, "server", "--backend-store-uri", backend_url, "--serve-artifacts", "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=artifacts.parent)
    server = MlflowServer(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.url}/health", timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"mlflow server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")
