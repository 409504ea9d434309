"""The `preprocess` DVC stage module, run in a temporary project folder on a tiny ingest output."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

STAGE = Path(__file__).resolve().parents[2] / "pipelines" / "preprocess.py"


def _stage():
    spec = importlib.util.spec_from_file_location("pipelines_preprocess_stage", STAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_writes_outputs_cache_and_figures(ingest_dir, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(ingest_dir, project / "data/interim/ingest")
    (project / "params.yaml").write_text(
        "preprocess:\n  xray_size: 32\n  ct_size: 24\n  ct_slices: 9\n  volume_size: 16\n  volume_slices: 6\n  crop_size: 16\n"
    )
    monkeypatch.chdir(project)
    stage = _stage()
    assert stage.main(["--workers", "1"]) == 0  # the worker pool is tested in test_cache.py
    index = pd.read_parquet("data/processed/index.parquet")
    assert len(index) == 5 and (project / "data/processed/input_specs.json").is_file()
    assert any(Path("build/cache/preprocess").rglob("*.npy"))
    figures = sorted(p.name for p in Path("reports/figures/preprocess").glob("*.png"))
    # the fixture has one X-ray per class: too few for PCA, so only the CT PCA figure (covid19: 2 images)
    assert figures == ["fig1a_pseudo_colour.png", "fig1b_dimension_normalisation.png", "pca_ct.png"]
    # a forced rerun (DVC deletes the outs first) finds everything in the cache
    shutil.rmtree("data/processed")
    assert stage.main(["--no-figures", "--workers", "1"]) == 0
    assert pd.read_parquet("data/processed/index.parquet").equals(index)


def test_stage_reports_missing_manifest(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert _stage().main([]) != 0
    assert "manifest.parquet" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["preprocess:\n  colormap_typo: jet\n", "preprocess:\n  ct_slices: 301\n"])
def test_stage_reports_bad_params(tmp_path, monkeypatch, capsys, bad):
    (tmp_path / "params.yaml").write_text(bad)
    monkeypatch.chdir(tmp_path)
    assert _stage().main([]) != 0
    assert "preprocess." in capsys.readouterr().err
