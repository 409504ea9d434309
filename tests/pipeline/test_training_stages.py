"""The training stages (pipelines/train_teacher.py ... baselines.py) run for real on the tiny profile.

The data stages run once (`dvc repro preprocess` in the copied project); every training stage then
runs as a subprocess, as DVC would run it. One teacher (TS1) trains its two configured folds in one
process; folds beyond `splits.n_folds` (2-4) write empty markers.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.pipeline.conftest import run

pytestmark = pytest.mark.slow

STAGE_COMMANDS = [
    ("train_teacher@TS1", ["-m", "pipelines.train_teacher", "--teacher", "TS1"]),
    ("aggregate_cv", ["-m", "pipelines.aggregate_cv"]),
    ("distill", ["-m", "pipelines.distill"]),
    ("train_regressor", ["-m", "pipelines.train_regressor"]),
    ("train_csacnet", ["-m", "pipelines.train_csacnet"]),
    ("baselines", ["-m", "pipelines.baselines"]),
]
REGISTERED = ["covidscan-student-xray", "covidscan-student-ct", "covidscan-cnnrf", "covidscan-csacnet"]


@pytest.fixture(scope="module")
def trained(dvc_project):
    """The tiny project after preprocess and every training stage; returns (repo, env, stage logs)."""
    repo, env = dvc_project
    env = dict(env, OMP_NUM_THREADS="1", PYTHONPATH=f"{repo / 'src'}:{repo}")
    run(["dvc", "repro", "preprocess"], repo, env)
    run([sys.executable, "-m", "pipelines.configure", "--tuned"], repo, env)  # configure_tuned: build/params/distill.json
    logs = {}
    for stage, args in STAGE_COMMANDS:
        logs[stage] = run([sys.executable, *args], repo, env).stderr
    return repo, env, logs


def test_teacher_outputs_and_markers(trained):
    from covidscan.models.zoo import load_model

    repo, _, logs = trained
    for task in ("xray", "ct"):
        for fold in (0, 1):
            model = load_model(repo / f"models/teachers/{task}/TS1-f{fold}.pt")
            classes = ["normal", "pneumonia", "covid19"] + (["influenza"] if task == "ct" else [])
            assert model.card.arch == "TS1" and list(model.card.class_labels) == classes
            oof = pd.read_parquet(repo / f"models/teachers/{task}/TS1-f{fold}.oof.parquet")
            assert len(oof) > 0 and (oof["fold"] == fold).all()
            probs = oof[[f"p_{c}" for c in classes]].sum(axis=1)
            assert probs.between(0.999, 1.001).all()
        assert (repo / f"models/teachers/{task}/TS1-f4.pt").stat().st_size == 0
        assert pd.read_parquet(repo / f"models/teachers/{task}/TS1-f4.oof.parquet").empty
    assert "fold not configured" in logs["train_teacher@TS1"]
    # the two folds' out-of-fold rows are disjoint: each train-val record is predicted once
    oof = pd.read_parquet(repo / "models/teachers/oof.parquet")
    assert not oof.duplicated(["task", "teacher", "record_id"]).any()


def test_cv_metrics(trained):
    repo, _, _ = trained
    metrics = json.loads((repo / "metrics/cv.json").read_text())
    weights = json.loads((repo / "models/teachers/cv.json").read_text())
    for task in ("xray", "ct"):
        m = metrics[task]["TS1"]
        assert m["folds"] == [0, 1] and len(m["fold_auroc"]) == 2
        finite = [a for a in m["fold_auroc"] if a is not None]
        if finite:
            assert m["mean_auroc"] == pytest.approx(sum(finite) / len(finite), abs=1e-5)
        assert weights[task]["TS1"]["fold_auroc"] == m["fold_auroc"]


def test_students_baselines_and_regressor(trained):
    import torch

    from covidscan.models.zoo import load_model

    repo, _, _ = trained
    report = json.loads((repo / "metrics/distill.json").read_text())
    for task in ("xray", "ct"):
        student = load_model(repo / f"models/student-{task}.pt")
        assert student.card.arch == "student"
        assert student.card.threshold == pytest.approx(report[task]["threshold"])
        assert {"student_val_auroc", "no_kd_val_auroc"} <= set(report[task])
        # TS1's two configured folds (other teachers may be present when a full repro ran first in this session)
        teachers = report[task]["teachers"]
        assert teachers["TS1"] == 2 and set(teachers.values()) == {2}
    cnnrf = load_model(repo / "models/cnnrf.pt")
    rng = cnnrf.card.require_target_range("models/cnnrf.pt")  # the training part's range, on the card
    assert rng.names == cnnrf.card.class_labels and len(rng.low) == 5 and all(a <= b for a, b in zip(rng.low, rng.high))
    assert "target_min" not in torch.load(repo / "models/cnnrf.pt", weights_only=True)["extra"]
    assert cnnrf.card.task == "regression"
    assert load_model(repo / "models/csacnet.pt").card.arch == "csacnet"
    assert load_model(repo / "models/baselines/resnet3d.pt").card.arch == "resnet3d"
    assert (repo / "models/baselines/svm.joblib").is_file() and (repo / "models/baselines/random_forest.joblib").is_file()
    baselines = json.loads((repo / "metrics/baselines.json").read_text())
    assert set(baselines) == {"resnet3d", "svm", "random_forest"}
    for entry in baselines.values():
        assert entry["test_auroc"] is None or 0.0 <= entry["test_auroc"] <= 1.0


def _identifiers(repo: Path) -> set[str]:
    """Pseudonyms from the manifest and the raw DICOM identities of the synthetic export."""
    import pydicom

    manifest = pd.read_parquet(repo / "data/interim/ingest/manifest.parquet")
    found = set(manifest["patient_id"]) | set(manifest["study_id"])
    for path in sorted((repo / "data/raw/synthetic").rglob("*.dcm"))[:40]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for key in ("PatientID", "PatientName", "AccessionNumber", "InstitutionName"):
            value = str(ds.get(key, "") or "")
            if len(value) >= 4:
                found.add(value)
    return found


def test_mlflow_runs_metrics_and_registry(trained):
    from mlflow import MlflowClient

    repo, env, _ = trained
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("covidscan")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    by_stage = {r.data.tags.get("covidscan.stage"): r for r in runs}
    for stage, _ in STAGE_COMMANDS:
        assert stage in by_stage, f"no MLflow run for {stage}"
    # per-epoch metrics (step = epoch) from the loop's callback, and peak RSS
    teacher = by_stage["train_teacher@TS1"]
    for fold in (0, 1):  # one run per teacher; each fold's epochs under its own prefix
        history = client.get_metric_history(teacher.info.run_id, f"xray/f{fold}/train_loss")
        assert [m.step for m in history] == [0]
    assert {"xray/f0/val_auroc", "xray/f1/lr", "ct/f0/gate_open", "peak_rss_mb_stage", "folds_configured"} <= set(teacher.data.metrics)
    assert teacher.data.metrics["folds_configured"] == 2
    distill = by_stage["distill"]
    assert {"xray/kd/train_loss", "xray/nokd/train_loss", "ct/student_val_auroc", "ct/no_kd_val_auroc"} <= set(distill.data.metrics)
    artifacts = [a.path for a in client.list_artifacts(distill.info.run_id, "figures")]
    assert "figures/xray_loss.png" in artifacts
    # registered models with the data version
    digest = hashlib.sha256((repo / "data/interim/ingest/manifest.parquet").read_bytes()).hexdigest()[:16]
    for name in REGISTERED:
        versions = client.search_model_versions(f"name='{name}'")
        assert versions, f"{name} not registered"
        assert versions[0].tags.get("data_version") == digest
    # nothing identifying in params or tags
    ids = _identifiers(repo)
    assert ids
    for r in runs:
        text = json.dumps({"params": r.data.params, "tags": r.data.tags})
        leaked = [i for i in ids if i in text]
        assert not leaked, f"run {r.info.run_name} leaks {leaked[:3]}"


def test_dvc_yaml_expands_the_training_stages(trained):
    """dvc.yaml declares one stage per teacher (4) and every training stage; DVC accepts it."""
    repo, env, _ = trained
    listed = run(["dvc", "stage", "list"], repo, env).stdout
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    teachers = {n for n in names if n.startswith("train_teacher@")}
    assert teachers == {f"train_teacher@TS{k}" for k in range(1, 5)}
    assert {"aggregate_cv", "distill", "train_regressor", "train_csacnet", "baselines"} <= names


def _queue_finished(repo: Path, env: dict[str, str], names: list[str], timeout_s: float = 900) -> str:
    """Poll `dvc queue status` until none of ``names`` is queued or running; returns the last status table."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        rows = [line.split() for line in status.splitlines() if any(f" {n} " in f" {line} " for n in names)]
        if len(rows) == len(names) and not any(state in row for row in rows for state in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")
        time.sleep(2)


def test_teachers_queued_in_parallel_match_the_serial_run(trained):
    """docs/SCALING.md's grid on one machine: one queued experiment per teacher (`dvc exp run --queue`),
    run two at a time (`dvc queue start --jobs 2`). The queued TS1 is the model the serial run trained
    (the same weights and out-of-fold predictions, fold by fold); TS2 trained beside it."""
    import torch
    import yaml

    repo, env, _ = trained  # env: OMP_NUM_THREADS=1 as for the serial run; the project's MLflow store (absolute path)
    names = ["queue-TS1", "queue-TS2"]
    for name in names:
        # --force: train, not restore from the run cache (a full repro may have run TS1 in this shared project);
        # --single-item: only the teacher, its inputs checked out from the DVC cache; -C: configure's uncached outputs
        run(["dvc", "exp", "run", "--queue", "--force", "--single-item", "-C", "build/params", "-n", name,
             f"train_teacher@{name.removeprefix('queue-')}"], repo, env)  # fmt: skip
    run(["dvc", "queue", "start", "--jobs", "2"], repo, env)
    try:
        status = _queue_finished(repo, env, names)
    finally:
        run(["dvc", "queue", "stop"], repo, env, check=False)
    if status.count("Success") < len(names):
        logs = "\n".join(run(["dvc", "queue", "logs", n], repo, env, check=False).stdout[-3000:] for n in names)
        raise AssertionError(f"{status}\n{logs}")
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).stdout.split()
    for name in names:
        teacher = name.removeprefix("queue-")
        (ref,) = [r for r in refs if r.endswith(f"/{name}")]
        lock = yaml.safe_load(run(["git", "show", f"{ref}:dvc.lock"], repo, env).stdout)
        outs = {o["path"]: o["md5"] for o in lock["stages"][f"train_teacher@{teacher}"]["outs"]}
        for task in ("xray", "ct"):
            for fold in (0, 1):
                cached = {suffix: repo / ".dvc/cache/files/md5" / outs[f"models/teachers/{task}/{teacher}-f{fold}{suffix}"][:2]
                          / outs[f"models/teachers/{task}/{teacher}-f{fold}{suffix}"][2:] for suffix in (".pt", ".oof.parquet")}  # fmt: skip
                queued = torch.load(cached[".pt"], weights_only=True)
                assert queued["state_dict"], f"{name}: {task} fold {fold} has no weights"
                if teacher != "TS1":
                    continue
                serial = torch.load(repo / f"models/teachers/{task}/TS1-f{fold}.pt", weights_only=True)
                assert serial["state_dict"].keys() == queued["state_dict"].keys()
                for key, value in serial["state_dict"].items():
                    assert torch.equal(value, queued["state_dict"][key]), f"{task} fold {fold}: {key} differs from the serial run"
                pd.testing.assert_frame_equal(pd.read_parquet(cached[".oof.parquet"]), pd.read_parquet(repo / f"models/teachers/{task}/TS1-f{fold}.oof.parquet"))
