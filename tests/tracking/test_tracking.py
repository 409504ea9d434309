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
