"""`covidscan evaluate-external`: a registered model on a second synthetic dataset (another seed), for real;
and a CT-slice model and an X-ray model on a CSV of CT slice and X-ray images (each scored on its own kind).

The model is registered in a temporary sqlite MLflow store as the training stages register it (with its
preprocessing); the dataset is written by the synthetic generator and read through the `hospital`
adapter; params.yaml then changes its preprocessing, and the command, run as a user runs it (a
subprocess), must still preprocess as the model was trained and write the full report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from covidscan.config import load_params
from tests.conftest import ROOT

NAME = "covidscan-student-xray"


@pytest.fixture()
def registered(tmp_path, monkeypatch):
    """A tiny X-ray student (tiny-profile sizes) registered and aliased `champion`; returns the env."""
    from covidscan.models.zoo import build_model
    from covidscan.tracking.registry import log_model, set_alias
    from covidscan.tracking.runs import stage_run
    from tests.serving import tiny_models as tm

    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "COVIDSCAN_ARTIFACT_ROOT": (tmp_path / "mlartifacts").as_uri(),
        "COVIDSCAN_SALT": "external-test-salt",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    p = load_params(ROOT / "params.yaml", profile="tiny")
    # the source has influenza X-rays: the model must have every class it is scored on (no fallback)
    labels = ["normal", "pneumonia", "covid19", "influenza"]
    model = build_model("student", p.models, input_size=p.preprocess.xray_size, class_labels=labels, kind="image2d").eval()
    with stage_run("distill", None, experiment="external-tests"):  # as the training stages register a model
        info = log_model(model, "student-xray", tm.example(model), registered_name=NAME, data_version="test", preprocess=p.preprocess,
                         checkpoint={"state_dict": model.state_dict(), "config": model.card.build})  # fmt: skip
    set_alias(NAME, "champion", str(info.registered_model_version))
    return {**os.environ, **env, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_evaluate_external_on_another_synthetic_dataset(tmp_path, registered):
    source = tmp_path / "second-site"
    synth = [sys.executable, "-m", "covidscan.cli", "synth", "--out", str(source), "--scale", "tiny", "--seed", "7"]
    subprocess.run(synth, cwd=tmp_path, env=registered, check=True, capture_output=True, timeout=300)
    # params.yaml changed since the model was registered: another X-ray size and colour map
    tiny = load_params(ROOT / "params.yaml", profile="tiny").preprocess
    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    line = f"preprocess: {{xray_size: {tiny.xray_size}, ct_slices: {tiny.ct_slices},"  # the tiny profile's
    assert text.count(line) == 1
    params.write_text(text.replace(line, f"preprocess: {{xray_size: {tiny.xray_size + 16}, colormap: gray3, ct_slices: {tiny.ct_slices},"))
    assert load_params(params, profile="tiny").preprocess.xray_size == tiny.xray_size + 16
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "covidscan.cli", "evaluate-external", "--model", f"{NAME}@champion",
           "--source", f"hospital:{source}", "--params", str(params), "--profile", "tiny", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=registered, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "research use only" in proc.stdout.lower()

    metrics = json.loads((out / "metrics.json").read_text())
    # preprocessed as the registered version was, not with the current params.yaml
    assert metrics["preprocess.xray_size"] == tiny.xray_size and metrics["preprocess.colormap"] == tiny.colormap
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


def _slice_manifest(root: Path) -> Path:
    """A CSV manifest in realdata-dev's format: 8 CT slices (PNG) and 4 X-rays (PNG), two sources, two classes."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    rows = ["path,label,patient_id,group_id,modality,source"]
    for i in range(12):
        modality = "ct" if i < 8 else "cxr"
        label = "covid" if i % 2 else "non_covid"
        rel = f"{modality}/{label}/img{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img = rng.normal(90, 20, (40, 36))
        img[10:20, 8:18] += 80 * (i % 2)
        cv2.imwrite(str(root / rel), np.clip(img, 0, 255).astype(np.uint8))
        rows.append(f"{rel},{label},p{i},g{i},{modality},{'ucsd_covidct' if i % 4 < 2 else 'ccd'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.mark.parametrize("kind, scored, left_out", [("ct_slice2d", 8, {"xray": 4}), ("image2d", 4, {"ct_slice2d": 8})])
def test_a_ct_slice_model_is_scored_on_the_ct_slices_of_a_csv_and_an_xray_model_on_its_xrays(tmp_path, kind, scored, left_out):
    """evaluate-external's library call on a CSV of CT slice and X-ray images (no registry: the model object)."""
    from covidscan.config import Params
    from covidscan.evaluation.external import evaluate_external, parse_source
    from covidscan.models.zoo import build_model
    from tests.serving import tiny_models as tm

    csv = _slice_manifest(tmp_path / "site")
    params = Params().model_copy(update={"preprocess": tm.TINY_PRE, "evaluate": Params().evaluate.model_copy(update={"bootstrap": 50})})
    model = build_model("student", tm.TINY_MODELS, input_size=32, class_labels=["normal", "pneumonia", "covid19"], kind=kind).eval()
    out = tmp_path / "report"
    result = evaluate_external(model, parse_source(f"csv:{csv}"), params, out, tmp_path / "work", salt=b"external-test-salt-0123")
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["n"] == metrics["n"] == scored
    assert metrics["input_kind"] == kind and {k.removeprefix("left_out."): v for k, v in metrics.items() if k.startswith("left_out.")} == left_out
    assert {k.split(".")[1] for k in metrics if k.startswith("per_source.")} == {"ucsd_covidct", "ccd"}
    assert "auroc" in metrics or any(k.startswith("auroc.") for k in metrics)
    card = (out / "model_card.html").read_text()
    assert kind in card and "research use only" in card.lower()
