"""An Optuna study on a real PostgreSQL server, run by two worker processes started separately, each in
its own copy of the project (as on two machines): together they finish exactly the budget."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.tuning.conftest import SRC, TINY, params, write_project

COVIDSCAN = str(Path(sys.executable).with_name("covidscan"))
BUDGET = 6

pytestmark = pytest.mark.slow  # two `covidscan tune` processes: about a minute on 2 cores


def test_two_separately_started_workers_finish_exactly_the_budget_on_postgres(postgres, tmp_path: Path) -> None:
    from covidscan.tuning.study import load_study

    storage = postgres.create_database("optuna_workers")
    raw = {**TINY, "tune": {**TINY["tune"], "n_trials": BUDGET, "pruner": "none"}}
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    write_project(machines[0], raw)
    shutil.copytree(machines[0], machines[1])  # the same data and params.yaml on both "machines" (`dvc pull` there)
    procs, logs = [], []
    for k, root in enumerate(machines):
        env = {**os.environ, "OPTUNA_STORAGE": storage, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "COVIDSCAN_ARTIFACT_ROOT": (root / "mlartifacts").as_uri(),
               "COVIDSCAN_REPRO_ID": f"tune-machine-{k}"}  # fmt: skip
        log = open(root / "tune.log", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(subprocess.Popen([COVIDSCAN, "tune", "--target", "student-xray", "--seed-offset", str(k)], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
    for proc, root in zip(procs, machines, strict=True):
        assert proc.returncode == 0, (root / "tune.log").read_text()[-3000:]

    study = load_study(params(raw), "student-xray", storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(BUDGET))  # none over budget
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state.name for t in trials]  # none lost (FAIL/RUNNING)
    workers = {t.system_attrs["covidscan.worker"]["pid"] for t in trials}
    assert workers == {p.pid for p in procs}, workers  # both processes ran trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == BUDGET  # the two samplers did not draw the same values
    for root in machines:  # each machine exported the finished study
        entry = yaml.safe_load((root / "params/tuned.yaml").read_text())["student-xray"]
        assert entry["status"] == "tuned" and entry["trials"]["complete"] == BUDGET and entry["best_trial"] == study.best_trial.number
