"""MLflow stage runs and the registry on a real sqlite store in a temp dir."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from covidscan.config import Params


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("COVIDSCAN_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("COVIDSCAN_REPRO_ID", "test-repro-1")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return mlflow



def test_new_experiments_on_a_tracking_server_keep_their_artifacts_in_its_store(tmp_path, monkeypatch):
    """With an http(s) MLFLOW_TRACKING_URI the experiment's artifact root is the server's (None: its
    served store), not a local folder other machines cannot read; COVIDSCAN_ARTIFACT_ROOT still wins."""
    from covidscan.environment import artifact_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COVIDSCAN_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert artifact_root() is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example")
    assert artifact_root() is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert artifact_root() == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("COVIDSCAN_ARTIFACT_ROOT", "s3://bucket/artifacts")
    assert artifact_root() == "s3://bucket/artifacts"

def test_stage_runs_share_one_parent_and_carry_params_and_tags(store):
    from covidscan.tracking.runs import log_metrics, stage_run

    for stage in ("configure", "ingest"):
        with stage_run(stage, Params(), experiment="t"):
            log_metrics({"x": 1.0, "nan": float("nan")})
    runs = store.search_runs(search_all_experiments=True, output_format="list")
    children = [r for r in runs if "covidscan.stage" in r.data.tags]
    assert {r.data.tags["covidscan.stage"] for r in children} == {"configure", "ingest"}
    assert len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1
    assert children[0].data.params["train.classifier.lr"] == "0.01"
    assert "nan" not in children[0].data.metrics


def test_log_register_alias_and_load(store):
    from covidscan.tracking.registry import load_model, log_model, set_alias, version_by_alias
    from covidscan.tracking.runs import stage_run

    net = TinyNet()
    example = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with stage_run("distill", None, experiment="t"):
        info = log_model(
            net, "student", example, registered_name="covidscan-student-test", data_version="abc123",
            checkpoint={"state_dict": net.state_dict(), "config": {"name": "tiny"}},
        )
    assert str(info.registered_model_version) == "1"
    assert version_by_alias("covidscan-student-test", "champion") is None
    set_alias("covidscan-student-test", "champion", 1)
    mv = version_by_alias("covidscan-student-test", "champion")
    assert str(mv.version) == "1" and mv.tags["data_version"] == "abc123"
    loaded = load_model("models:/covidscan-student-test@champion")
    x = torch.from_numpy(example)
    assert torch.allclose(loaded(x), net(x))


def _repro_runs(store, rid: str):
    runs = store.search_runs(search_all_experiments=True, output_format="list")
    parent = [r for r in runs if r.data.tags.get("covidscan.repro_id") == rid]
    assert len(parent) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    return parent[0], children


def test_parent_run_lasts_as_long_as_its_stage_runs(store):
    import time

    from covidscan.tracking.runs import stage_run

    for stage in ("configure", "ingest", "split"):
        with stage_run(stage, None, experiment="t"):
            time.sleep(0.3)
    parent, children = _repro_runs(store, "test-repro-1")
    assert len(children) == 3 and parent.info.status == "FINISHED"
    spent = sum(c.info.end_time - c.info.start_time for c in children)
    assert parent.info.end_time - parent.info.start_time >= spent >= 900
    assert parent.info.start_time <= min(c.info.start_time for c in children)
    assert parent.info.end_time >= max(c.info.end_time for c in children)


def test_a_failing_stage_marks_the_parent_run_failed(store):
    from covidscan.tracking.runs import stage_run

    with stage_run("configure", None, experiment="t"):
        pass
    assert _repro_runs(store, "test-repro-1")[0].info.status == "FINISHED"
    with pytest.raises(RuntimeError, match="boom"), stage_run("ingest", None, experiment="t"):
        raise RuntimeError("boom")
    parent, children = _repro_runs(store, "test-repro-1")
    assert parent.info.status == "FAILED"
    assert {c.data.tags["covidscan.stage"]: c.info.status for c in children} == {"configure": "FINISHED", "ingest": "FAILED"}
    with stage_run("split", None, experiment="t"):  # a later stage that succeeds does not hide the failure
        pass
    parent, _ = _repro_runs(store, "test-repro-1")
    assert parent.info.status == "FAILED" and parent.info.end_time >= max(c.info.end_time for c in _repro_runs(store, "test-repro-1")[1])


def test_a_stage_failing_outside_its_stage_run_marks_the_parent_run_failed(store):
    from covidscan.errors import DataError
    from covidscan.tracking.runs import stage_run
    from pipelines import stage_main

    with stage_run("configure", None, experiment="t"):
        pass

    def stage() -> None:
        raise DataError("data/splits/splits.parquet: not found")  # before the stage's own run starts

    with pytest.raises(SystemExit) as exit_info:
        stage_main(stage)
    assert exit_info.value.code != 0
    assert _repro_runs(store, "test-repro-1")[0].info.status == "FAILED"


@pytest.mark.slow
def test_dvc_repro_parent_run_spans_the_repro_and_fails_with_a_stage(tmp_path):
    """A real `dvc repro` (each stage its own process, the repro id from the dvc process): the parent
    run lasts at least as long as its stage runs together, and a failing stage makes it FAILED."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import mlflow
    import yaml

    from tests.conftest import ROOT

    stage_code = (
        "import sys, time\n"
        "from pipelines import stage_main\n"
        "from covidscan.tracking.runs import stage_run\n"
        "def main():\n"
        "    with stage_run(sys.argv[1], None, experiment='repro-test'):\n"
        "        time.sleep(0.5)\n"
        "        open(sys.argv[1] + '.out', 'w').write('done')\n"
        "        if sys.argv[1] == 'fails':\n"
        "            raise RuntimeError('this stage fails')\n"
        "stage_main(main)\n"
    )
    (tmp_path / "stage.py").write_text(stage_code)
    stages = {name: {"cmd": f"python stage.py {name}", "deps": ["stage.py", *([f"{dep}.out"] if dep else [])], "outs": [f"{name}.out"]}
              for name, dep in (("first", None), ("second", "first"), ("fails", "second"))}  # fmt: skip
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "COVIDSCAN_ARTIFACT_ROOT": (tmp_path / "artifacts").as_uri(), "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    env.pop("COVIDSCAN_REPRO_ID", None)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro"]):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "this stage fails" in proc.stderr + proc.stdout
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = store.search_runs([store.get_experiment_by_name("repro-test").experiment_id])
    parents = [r for r in runs if "covidscan.repro_id" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["covidscan.repro_id"].startswith("dvc-")
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {c.data.tags["covidscan.stage"]: c.info.status for c in children} == {"first": "FINISHED", "second": "FINISHED", "fails": "FAILED"}
    spent = sum(c.info.end_time - c.info.start_time for c in children)
    assert parent.info.end_time - parent.info.start_time >= spent >= 1500
    assert parent.info.status == "FAILED"


def test_dvc_dep_hashes_resolve_dvc_yaml_vars(tmp_path):
    """A dependency written with dvc.yaml's vars (``${paths.processed}``) gets the upstream output's hash."""
    import yaml

    from covidscan.tracking.runs import dvc_dep_hashes

    dvc_yaml, dvc_lock = tmp_path / "dvc.yaml", tmp_path / "dvc.lock"
    dvc_yaml.write_text(yaml.safe_dump({
        "vars": [{"paths": {"processed": "data/processed", "splits": "data/splits"}}],
        "stages": {"train": {"cmd": "true", "deps": ["${paths.processed}", "${paths.splits}/splits.parquet", "${item}", "code.py"]}},
    }))  # fmt: skip
    dvc_lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "preprocess": {"outs": [{"path": "data/processed", "md5": "aaa.dir"}]},
        "split": {"outs": [{"path": "data/splits/splits.parquet", "md5": "bbb"}]},
    }}))  # fmt: skip
    assert dvc_dep_hashes("train", dvc_yaml, dvc_lock) == {"data/processed": "aaa.dir", "data/splits/splits.parquet": "bbb"}
