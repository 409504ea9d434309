"""Optuna studies on a tiny project: pruning, invalid architectures, the test split, kill/resume, workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from covidscan.tuning.objective import Objective, TuneData
from covidscan.tuning.study import budget, load_study, optimize, run_tuning, storage_location
from tests.tuning.conftest import params

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_tiny_study_prunes_logs_nested_runs_and_writes_tuned_file(project: Path) -> None:
    import mlflow

    from covidscan.tracking.runs import log_study, stage_run

    p = params()
    with stage_run("tune", p.tune, experiment="tune-test") as run:
        path = run_tuning(p, data=TuneData(Path("data/processed"), Path("data/splits/splits.parquet")), on_result=lambda r: log_study(f"tune {r.target}", r.entry, r.records, r.figures))
    study = load_study(p, "student-xray", storage_location(p))
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == p.tune.n_trials
    assert states.get("PRUNED", 0) >= 1, states
    assert all(len(t.intermediate_values) >= 1 for t in study.get_trials(states=(TrialState.COMPLETE,)))
    tuned = yaml.safe_load(path.read_text())["student-xray"]
    assert tuned["status"] == "tuned" and tuned["best_trial"] == study.best_trial.number
    assert tuned["apply"]["cnncf"]["M"] == study.best_trial.params["M"]
    figures = sorted(q.name for q in (project / "reports/tuning/student-xray").glob("*.png"))
    assert "optimization_history.png" in figures and "slice.png" in figures
    # MLflow: the study run nested in the stage run, one finished run per trial nested in the study run
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    study_run = next(r for r in runs if r.info.run_name == "tune student-xray")
    assert study_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study_run.info.run_id]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in trials) == list(range(p.tune.n_trials))
    pruned = [r for r in trials if r.data.tags["optuna.state"] == "PRUNED"]
    assert pruned and all(r.info.status == "KILLED" for r in pruned)
    some = trials[0]
    assert set(some.data.params) >= {"M", "L", "lr"}
    history = client.get_metric_history(some.info.run_id, "val_auroc_step")
    assert len(history) == len(study.trials[int(some.data.tags["optuna.trial"])].intermediate_values)
    artifacts = {a.path for a in client.list_artifacts(study_run.info.run_id)} | {a.path for a in client.list_artifacts(study_run.info.run_id, "figures")}
    assert "best_params.json" in artifacts and "figures/optimization_history.png" in artifacts


def test_invalid_architecture_is_a_pruned_trial_not_a_crash(project: Path) -> None:
    # Q=2 x M=2 halvings plus stage II's stride-2 blocks shrink a 16x16 input below 1x1: refused at construction
    p = params({"tune": {"n_trials": 2, "space": {"Q": [2, 2], "M": [2, 2], "N": [2, 2]}}})
    study = optimize(p, "student-xray", TuneData(Path("data/processed"), Path("data/splits/splits.parquet"), teachers=None), storage_location(p))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(t.user_attrs["pruned_reason"] == "invalid_architecture" and "below 1x1" in t.user_attrs["error"] for t in trials)
    entry = json.loads(json.dumps(run_tuning(p, data=TuneData(Path("data/processed"), Path("data/splits/splits.parquet"))).read_text()))  # no completed trial: the configured values
    assert "status: untuned" in entry


def test_objective_never_reads_the_test_split(project: Path) -> None:
    parts = yaml.safe_load((project / "parts.yaml").read_text())
    for rid in parts["test"]:  # any read of a test array would now fail (not a .npy file)
        (project / f"data/processed/xray/{rid}.npy").write_bytes(b"TEST SPLIT: must not be read")
    p = params({"tune": {"n_trials": 2}})
    objective = Objective(p, "student-xray", TuneData(Path("data/processed"), Path("data/splits/splits.parquet"), teachers=None))
    assert set(objective.rows["record_id"]) == set(parts["trainval"])
    study = optimize(p, "student-xray", TuneData(Path("data/processed"), Path("data/splits/splits.parquet"), teachers=None), storage_location(p))
    assert sum(_states(study).get(s.name, 0) for s in FINISHED) == 2 and "FAIL" not in _states(study)


WORKER = """
import sys, yaml
from covidscan.config import parse_params
from pathlib import Path
from covidscan.tuning.objective import TuneData
from covidscan.tuning.study import run_worker
raw = yaml.safe_load(open("params.yaml"))
p = parse_params(raw)
run_worker(p, "student-xray", TuneData(Path("data/processed"), Path("data/splits/splits.parquet"), teachers=None), sys.argv[1])
"""


def test_killed_study_resumes_to_its_budget_without_duplicates(project: Path) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["tune"].update({"n_trials": 4, "epochs": 3, "pruner": "none"})
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    p = params({"tune": {"n_trials": 4, "epochs": 3, "pruner": "none"}})
    storage = storage_location(p)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, storage], cwd=project, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 180  # generous: a loaded 2-core CI machine
    killed_running = False
    while time.time() < deadline and proc.poll() is None:
        if Path(storage).exists():
            study = load_study(p, "student-xray", storage)
            s = budget(study, 4)
            if s.finished >= 1 and s.running == 1:
                proc.send_signal(signal.SIGKILL)
                killed_running = True
                break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed_running, "the worker finished before it could be killed mid-trial"
    before = load_study(p, "student-xray", storage)
    assert budget(before, 4).running == 1  # left RUNNING by the killed process
    optimize(p, "student-xray", TuneData(Path("data/processed"), Path("data/splits/splits.parquet"), teachers=None), storage)  # resume
    study = load_study(p, "student-xray", storage)
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 4, states
    assert states.get("FAIL") == 1 and "RUNNING" not in states and "WAITING" not in states
    failed = study.get_trials(states=(TrialState.FAIL,))[0]
    retries = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retries) == 1 and retries[0].params == failed.params and retries[0].state in FINISHED


def test_two_worker_processes_complete_exactly_the_budget(project: Path) -> None:
    p = params({"tune": {"n_trials": 5, "pruner": "none"}})
    storage = storage_location(p)
    optimize(p, "student-xray", TuneData(Path("data/processed"), Path("data/splits/splits.parquet"), teachers=None), storage, workers=2)
    study = load_study(p, "student-xray", storage)
    trials = study.get_trials()
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(5))
    beats = {(t.system_attrs["covidscan.heartbeat"]["pid"]) for t in trials}
    assert os.getpid() not in beats  # the trials ran in the worker processes
