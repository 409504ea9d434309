"""The `evaluate` stage on the tiny synthetic data with small saved models (zoo.save_model format)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.pipeline.conftest import run

pytestmark = pytest.mark.slow  # a real `dvc repro preprocess` in a project copy

EXPERIMENTS = ["B", "R-xray", "S", "CA"]


@pytest.fixture(scope="module")
def evaluated(dvc_project):
    """`dvc repro preprocess` in the project copy, small models, then the stage for a few experiments."""
    repo, env = dvc_project
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{repo / 'src'}:{repo}"}
    run(["dvc", "repro", "preprocess"], repo, env)
    script = (
        "from pathlib import Path\n"
        "from covidscan.config import load_params\n"
        "from tests.pipeline.evaluate_models import write_models\n"
        "write_models(load_params(), Path('models'))\n"
    )
    run([sys.executable, "-c", script], repo, env)
    procs = {
        e: run([sys.executable, "-m", "pipelines.evaluate", "--experiment", e], repo, env)
        for e in EXPERIMENTS
    }
    return repo, env, procs


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_outputs_exist_and_metrics_parse(evaluated, experiment):
    repo, _, _ = evaluated
    metrics = json.loads((repo / "metrics" / "evaluate" / f"{experiment}.json").read_text())
    assert metrics["experiment"] == experiment
    assert all(not isinstance(v, (dict, list)) for v in metrics.values())  # flat, for dvc metrics show
    out = repo / "reports" / "evaluate" / experiment
    assert (out / "model_card.html").is_file()
    if experiment == "CA":
        assert metrics["n_cases"] >= 1
        assert {"regression.pooled.mse", "regression.pooled.rmse", "regression.pooled.mae", "significance.pooled.n", "significance.crp.significant"} <= set(metrics)
        assert metrics["significance.crp.n"] == metrics["n_cases"] and metrics["significance.pooled.n"] == 5 * metrics["n_cases"]
        assert metrics["significance.pooled.pooled"] is True and metrics["target_range.crp.max"] == 80.0
        assert metrics["generator_stated_r.crp"] == pytest.approx(0.85, abs=0.2)
        return
    assert 0.0 <= metrics["threshold"] <= 1.0 and metrics["n"] >= 1
    assert "sensitivity.point" in metrics and "specificity.low" in metrics
    assert any(k.startswith("per_source.") for k in metrics) and any(k.startswith("per_centre.") for k in metrics)
    assert (out / "roc.csv").read_text().startswith("fpr,tpr") and (out / "pr.csv").read_text().startswith("recall,precision")
    assert list((out / "figures" / "gradcam").glob("*.png"))


def test_experiment_specific_metrics(evaluated):
    repo, _, _ = evaluated
    s = json.loads((repo / "metrics" / "evaluate" / "S.json").read_text())
    assert any(k.startswith("subsets.S1 vs S2+S3.") for k in s)
    assert s["time_per_volume_s"] > 0
    assert "thresholds.0.50.sensitivity" in s
    assert {"comparison.csacnet.auroc.low", "comparison.resnet3d.sensitivity.point", "comparison.resnet3d.n"} <= set(s)
    a_free = json.loads((repo / "metrics" / "evaluate" / "B.json").read_text())
    assert not any(k.startswith("subsets.S1 vs") for k in a_free) and "confound.purity" in a_free
    r = json.loads((repo / "metrics" / "evaluate" / "R-xray.json").read_text())
    assert {"multiclass.macro.f1", "multiclass.covid19.sensitivity", "multiclass.overall.kappa"} <= set(r)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_model_card_lists_every_figure(evaluated, experiment):
    repo, _, _ = evaluated
    out = repo / "reports" / "evaluate" / experiment
    page = (out / "model_card.html").read_text()
    assert "Research only" in page
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs
    for png in pngs:
        assert png in page, f"{png} not in the model card"


def test_mlflow_has_the_runs(evaluated):
    repo, env, _ = evaluated
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("covidscan")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`covidscan.stage` = 'evaluate@S'")
    assert runs
    run_ = runs[0]
    assert "auroc_exact" in run_.data.metrics and run_.data.params["bootstrap"] == "50"
    names = {a.path for a in client.list_artifacts(run_.info.run_id, "report")}
    assert "report/model_card.html" in names


def test_unknown_experiment_is_one_line(evaluated):
    repo, env, _ = evaluated
    proc = run([sys.executable, "-m", "pipelines.evaluate", "--experiment", "nope"], repo, env, check=False)
    assert proc.returncode != 0
    assert "no experiment 'nope'" in proc.stderr
