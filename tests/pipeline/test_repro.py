"""A real `dvc repro` of the pipeline (tiny profile) in a temporary git repository."""

from __future__ import annotations

import time

import mlflow
import pytest

from tests.pipeline.conftest import ran_stages, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_repro(dvc_project):
    repo, env = dvc_project
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
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list") if r.info.start_time >= proc.started_ms]
    stage_runs = {r.data.tags.get("covidscan.stage"): r for r in runs if r.data.tags.get("covidscan.stage")}
    assert set(stage_runs) >= ran_stages(proc.stdout)
    commit = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    parents = {r.data.tags.get("mlflow.parentRunId") for r in stage_runs.values()}
    assert len(parents) == 1 and None not in parents  # one parent run for the whole repro
    for r in stage_runs.values():
        assert r.data.tags["covidscan.git_commit"].startswith(commit)


def test_typo_in_params_fails_fast_naming_the_key(dvc_project, first_repro):
    repo, env = dvc_project
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


def test_exp_run_reruns_only_affected_stages(dvc_project, first_repro):
    repo, env = dvc_project
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
