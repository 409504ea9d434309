"""`covidscan evaluate-external`: a registered model on a second synthetic dataset (another seed), for real.

The model is registered in a temporary sqlite MLflow store as the training stages register it; the
dataset is written by the synthetic generator and read through the `hospital` adapter; the command runs
as a user runs it (a subprocess) and writes the full report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

NAME = "covidscan-student-xray"


@pytest.fixture()
def registered(tmp_path, monkeypatch):
    """A tiny X-ray student (tiny-profile sizes) registered and aliased `champion`; returns the env."""
    from covidscan.config import load_params
    from covidscan.models.zoo import build_model
    from covidscan.tracking.registry import set_alias
    from tests.serving import tiny_models as tm

    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "COVIDSCAN_ARTIFACT_ROOT": (tmp_path / "mlartifacts").as_uri(),
        "COVIDSCAN_SALT": "external-test-salt",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    p = load_params(ROOT / "params.yaml", profile="tiny")
    model = build_model("student", p.models, input_size=p.preprocess.xray_size, class_labels=["normal", "pneumonia", "covid19"], kind="image2d")
    version = tm.register(model.eval(), NAME)
    set_alias(NAME, "champion", version)
    return {**os.environ, **env, "OMP_NUM_THREADS": "1"}


def test_evaluate_external_on_another_synthetic_dataset(tmp_path, registered):
    source = tmp_path / "second-site"
    synth = [sys.executable, "-m", "covidscan.cli", "synth", "--out", str(source), "--scale", "tiny", "--seed", "7"]
    subprocess.run(synth, cwd=tmp_path, env=registered, check=True, capture_output=True, timeout=300)
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "covidscan.cli", "evaluate-external", "--model", f"{NAME}@champion",
           "--source", f"hospital:{source}", "--params", str(ROOT / "params.yaml"), "--profile", "tiny", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=registered, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "research use only" in proc.stdout.lower()

    metrics = json.loads((out / "metrics.json").read_text())
    truth = json.loads((source / "ground_truth.json").read_text())
    n_xray = sum(1 for path in truth["cases"] if path.startswith("dicom/xray/"))
    assert metrics["n"] == n_xray > 0  # every X-ray of the second site; the CT volumes do not fit this model
    for index in ("sensitivity", "specificity", "auroc"):
        assert any(k == index or k.startswith(index + ".") for k in metrics), index
    assert any(k.startswith("per_source.") for k in metrics)
    for figure in ("roc.png", "pr.png", "reliability.png", "boxplots.png"):
        assert (out / "figures" / figure).stat().st_size > 0
    card = (out / "model_card.html").read_text()
    assert "research use only" in card.lower() and card.count("<img") >= 4

    # its own MLflow run, with the model's address and the metrics
    mlflow.set_tracking_uri(registered["MLFLOW_TRACKING_URI"])
    runs = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list") if r.data.tags.get("covidscan.stage") == "evaluate-external"]
    assert len(runs) == 1
    assert runs[0].data.tags["covidscan.model_uri"] == f"models:/{NAME}@champion"
    assert runs[0].data.metrics
