"""The `preprocess` DVC stage module, run in a temporary project folder on a tiny ingest output."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import stage_exit_code, write_stage_params

STAGE = Path(__file__).resolve().parents[2] / "pipelines" / "preprocess.py"


def _stage():
    spec = importlib.util.spec_from_file_location("pipelines_preprocess_stage", STAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_writes_outputs_cache_and_figures(ingest_dir, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(ingest_dir, project / "data/interim/ingest")
    write_stage_params(project, "preprocess", {"preprocess": {
        "xray_size": 32, "ct_size": 24, "ct_slices": 9, "volume_size": 16, "volume_slices": 6, "crop_size": 16,
    }})
    monkeypatch.chdir(project)
    stage = _stage()
    assert stage_exit_code(stage.main, ["--workers", "1"]) == 0  # the worker pool is tested in test_cache.py
    index = pd.read_parquet("data/processed/index.parquet")
    assert len(index) == 5 and (project / "data/processed/input_specs.json").is_file()
    assert any(Path("build/cache/preprocess").rglob("*.npy"))
    figures = sorted(p.name for p in Path("reports/figures/preprocess").glob("*.png"))
    # the fixture has one X-ray per class: too few for PCA, so only the CT PCA figure (covid19: 2 images)
    assert figures == ["fig1a_pseudo_colour.png", "fig1b_dimension_normalisation.png", "pca_ct.png"]
    # a forced rerun (DVC deletes the outs first) finds everything in the cache
    shutil.rmtree("data/processed")
    assert stage_exit_code(stage.main, ["--no-figures", "--workers", "1"]) == 0
    assert pd.read_parquet("data/processed/index.parquet").equals(index)


def test_stage_reports_missing_manifest(tmp_path, monkeypatch, capsys):
    write_stage_params(tmp_path, "preprocess")
    monkeypatch.chdir(tmp_path)
    assert stage_exit_code(_stage().main, []) == 2
    assert "manifest.parquet" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"colormap_typo": "jet"}, {"ct_slices": 301}])
def test_stage_reports_bad_params(tmp_path, monkeypatch, capsys, bad):
    """A hand-edited effective file is validated like params.yaml (configure validates params.yaml itself)."""
    (tmp_path / "build/params").mkdir(parents=True)
    (tmp_path / "build/params/preprocess.json").write_text(json.dumps({"run": {}, "preprocess": bad}))
    monkeypatch.chdir(tmp_path)
    assert stage_exit_code(_stage().main, []) == 2
    assert "preprocess." in capsys.readouterr().err
