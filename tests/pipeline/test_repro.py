"""A real `dvc repro` of the pipeline (tiny profile) in a temporary git repository.

Where PostgreSQL is installed (``make test`` installs it), the repro logs to an MLflow tracking server
(``mlflow server``: a PostgreSQL backend store, a served artifact store) through MLFLOW_TRACKING_URI,
as a team's shared server would be used (docs/SCALING.md), and the Bento service then serves the
champion from that server's registry. Without PostgreSQL it logs to the project's sqlite file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests

from tests.pipeline.conftest import ran_stages, run
from tests.scaling.conftest import NO_POSTGRES
from tests.scaling.postgres import MlflowServer, Postgres, postgres_bin_dir, start_mlflow_server, start_postgres

pytestmark = pytest.mark.slow


@dataclass
class Tracking:
    """The MLflow tracking server the repro logs to, its PostgreSQL and its artifact folder."""

    postgres: Postgres
    server: MlflowServer
    backend: str  # the server's backend store URL
    artifacts: Path  # its --artifacts-destination


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Iterator[Tracking | None]:
    """An MLflow server on a throwaway PostgreSQL, or None where PostgreSQL is not installed."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        yield None
        return
    pg = start_postgres(bin_dir)
    try:
        folder = tmp_path_factory.mktemp("mlflow-server")
        backend = pg.create_database("mlflow")
        server = start_mlflow_server(backend, folder / "artifacts", folder / "server.log")
        try:
            yield Tracking(pg, server, backend, folder / "artifacts")
        finally:
            server.stop()
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def first_repro(dvc_project, tracking):
    repo, env = dvc_project
    if tracking is not None:  # the server's own artifact store, not a local folder
        env = {k: v for k, v in env.items() if k != "COVIDSCAN_ARTIFACT_ROOT"} | {"MLFLOW_TRACKING_URI": tracking.server.url}
    # forced: other modules of this session may already have run the data stages in the shared project
    started_ms = int(time.time() * 1000)
    proc = run(["dvc", "repro", "--force"], repo, env)
    proc.started_ms = started_ms  # runs of other modules in this shared project started earlier
    return repo, env, proc


def test_first_repro_runs_every_stage(first_repro):
    repo, env, proc = first_repro
    listed = set(run(["dvc", "stage", "list", "--name-only"], repo, env).stdout.split())
    assert ran_stages(proc.stdout) == listed


def test_second_repro_is_up_to_date(first_repro):
    repo, env, _ = first_repro
    proc = run(["dvc", "repro"], repo, env)
    assert ran_stages(proc.stdout) == set()
    assert "up to date" in proc.stdout


def test_mlflow_has_a_run_per_stage_nested_and_tagged(first_repro):
    repo, env, proc = first_repro
    # a client of its own: mlflow.set_tracking_uri would point every later test of this worker (--dist loadfile)
    # at the server this module stops, and their MLflow calls would retry against it for many minutes
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(experiments, max_results=5000) if r.info.start_time >= proc.started_ms]
    stage_runs = {r.data.tags.get("covidscan.stage"): r for r in runs if r.data.tags.get("covidscan.stage")}
    assert set(stage_runs) >= ran_stages(proc.stdout)
    commit = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    parents = {r.data.tags.get("mlflow.parentRunId") for r in stage_runs.values()}
    assert len(parents) == 1 and None not in parents  # one parent run for the whole repro
    for r in stage_runs.values():
        assert r.data.tags["covidscan.git_commit"].startswith(commit)


def test_typo_in_params_fails_fast_naming_the_key(first_repro):
    repo, env, _ = first_repro
    params = repo / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("\ntrain:", "\ntrian:", 1))
        start = time.monotonic()
        proc = run(["dvc", "repro"], repo, env, check=False)
        elapsed = time.monotonic() - start
        assert proc.returncode != 0
        assert "unknown key 'trian'" in proc.stderr + proc.stdout
        assert elapsed < 60  # "within seconds": no stage before configure does any work
    finally:
        params.write_text(original)


def test_exp_run_reruns_only_affected_stages(first_repro):
    repo, env, _ = first_repro
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "after repro", "--allow-empty"], repo, env)
    # run.num_workers is overridden by the tiny profile: the effective params do not change
    masked = run(["dvc", "exp", "run", "-S", "run.num_workers=3"], repo, env)
    assert ran_stages(masked.stdout) <= {"configure", "configure_tuned"}  # they read params.yaml; nothing after them
    # a parameter only `register` declares: configure and register rerun, no data or training stage does
    # (a changed data parameter rerunning everything downstream is the first repro's and DVC's own business;
    # rerunning the whole pipeline here cost ~6 minutes of the suite)
    changed = run(["dvc", "exp", "run", "-S", "+profiles.tiny.registry.bootstrap=60"], repo, env)
    ran = ran_stages(changed.stdout)
    assert {"configure", "register"} <= ran
    assert not ran & {"synth", "ingest", "split", "preprocess", "distill", "train_regressor", "train_csacnet"}
    assert not {s for s in ran if s.startswith(("train_teacher", "evaluate"))}


# ------------------------------------------------------------------ the MLflow server on PostgreSQL
def _server(tracking: Tracking | None) -> Tracking:
    if tracking is None:
        pytest.skip(NO_POSTGRES)
    return tracking


def _champions(server_url: str) -> dict[str, str]:
    """Registered name -> the version its ``champion`` alias names, read from the server's registry."""
    client = mlflow.MlflowClient(tracking_uri=server_url)
    return {rm.name: str(rm.aliases["champion"]) for rm in client.search_registered_models() if "champion" in rm.aliases}


def test_the_mlflow_server_on_postgresql_holds_the_repro_and_its_registry(first_repro, tracking):
    from sqlalchemy import create_engine, text

    t = _server(tracking)
    repo, env, proc = first_repro
    assert env["MLFLOW_TRACKING_URI"] == t.server.url
    client = mlflow.MlflowClient(tracking_uri=t.server.url)
    exps = [e for e in client.search_experiments() if e.name != "Default"]
    runs = [r for r in client.search_runs([e.experiment_id for e in exps], max_results=5000) if r.info.start_time >= proc.started_ms]
    assert {r.data.tags.get("covidscan.stage") for r in runs} >= ran_stages(proc.stdout)
    champions = _champions(t.server.url)
    assert champions, "the register stage promoted no model"
    # artifacts live in the server's store (mlflow-artifacts:/ -> --artifacts-destination), not in a folder of this machine
    assert exps and all(e.artifact_location.startswith("mlflow-artifacts:") for e in exps), [e.artifact_location for e in exps]
    assert len(list(t.artifacts.rglob("MLmodel"))) >= len(champions)
    # the rows are in PostgreSQL (the backend store)
    engine = create_engine(t.backend)
    try:
        with engine.connect() as conn:
            n_runs = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
            aliases = dict(conn.execute(text("SELECT name, version FROM registered_model_aliases WHERE alias = 'champion'")).all())
    finally:
        engine.dispose()
    assert n_runs >= len(runs)
    assert {name: int(version) for name, version in champions.items()} == aliases


def test_bento_serves_the_champion_from_the_mlflow_servers_registry(first_repro, tracking, tmp_path):
    import cv2
    import numpy as np

    from tests.serving import server as srv

    t = _server(tracking)
    champions = _champions(t.server.url)
    served = srv.start(tmp_path, registry=t.server.url, timeout_s=180)
    try:
        assert served.alive()  # /readyz
        info = requests.post(f"{served.url}/info", json={}, timeout=30).json()
        assert {i["name"]: i["version"] for i in info["models"].values()} == champions
        image = (np.arange(48 * 40).reshape(48, 40) % 256).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "image.png"), image)
        upload = ("image.png", (tmp_path / "image.png").read_bytes())
        if "indicators" in info["models"]:
            r = requests.post(f"{served.url}/indicators", files=[("crops", upload)], timeout=120)
            assert r.status_code == 200, r.text
            assert set(r.json()["raw_units"]) == {"wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp"}
        else:
            assert "xray" in info["models"], info
            r = requests.post(f"{served.url}/xray", files=[("file", upload)], timeout=120)
            assert r.status_code == 200, r.text
            assert abs(sum(r.json()["probabilities"].values()) - 1.0) < 1e-4
    finally:
        srv.stop(served)
