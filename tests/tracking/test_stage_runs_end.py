"""A stage entry point whose work raises still ends its MLflow run (FAILED) and marks the repro's parent
run FAILED: no run is left active for the rest of the process."""

from __future__ import annotations

import importlib

import pandas as pd
import pytest

from covidscan.errors import DataError
from tests.conftest import stage_exit_code, write_stage_params


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("COVIDSCAN_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("COVIDSCAN_REPRO_ID", "test-repro-ends")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for stage in ("validate", "preprocess"):
        write_stage_params(tmp_path, stage)
    yield mlflow
    while mlflow.active_run() is not None:  # do not leak a run left open into the next test
        mlflow.end_run()


def _statuses(mlflow, stage: str) -> tuple[str, str]:
    """(the stage run's status, the repro parent run's status)."""
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parent = [r for r in runs if r.data.tags.get("covidscan.repro_id") == "test-repro-ends"]
    child = [r for r in runs if r.data.tags.get("covidscan.stage") == stage]
    assert len(parent) == 1 and len(child) == 1
    return child[0].info.status, parent[0].info.status


def _raise(error: Exception):
    def broken(*args, **kwargs):
        raise error

    return broken


def _run_stage(stage, argv: list[str], error: Exception, capsys) -> None:
    """Through stage_main a CovidscanError becomes one `error:` line and exit code 2; any other error
    propagates. The run must be ended by then, not only once the stage's frames are garbage-collected
    (the traceback keeps them alive)."""
    if isinstance(error, DataError):
        assert stage_exit_code(stage.main, argv) == 2
        assert f"error: {error}" in capsys.readouterr().err
    else:
        with pytest.raises(type(error), match=str(error)) as raised:
            stage.main(argv)
        assert raised.traceback  # the stage's frames are still referenced here


ERRORS = [DataError("broken input"), RuntimeError("unexpected bug")]


@pytest.mark.parametrize("error", ERRORS, ids=["data-error", "bug"])
def test_validate_stage_that_raises_ends_its_run_failed(store, monkeypatch, capsys, error):
    import covidscan.validation

    monkeypatch.setattr(covidscan.validation, "validate", _raise(error))
    _run_stage(importlib.import_module("pipelines.validate"), ["--no-splits", "--out", "reports/validation"], error, capsys)
    assert store.active_run() is None
    assert _statuses(store, "validate") == ("FAILED", "FAILED")


@pytest.mark.parametrize("error", ERRORS, ids=["data-error", "bug"])
def test_preprocess_stage_that_raises_ends_its_run_failed(store, monkeypatch, capsys, tmp_path, error):
    import covidscan.preprocess.cache

    ingest = tmp_path / "data/interim/ingest"
    ingest.mkdir(parents=True)
    pd.DataFrame({"record_id": ["r0"]}).to_parquet(ingest / "manifest.parquet")
    monkeypatch.setattr(covidscan.preprocess.cache, "preprocess_manifest", _raise(error))
    _run_stage(importlib.import_module("pipelines.preprocess"), ["--workers", "1"], error, capsys)
    assert store.active_run() is None
    assert _statuses(store, "preprocess") == ("FAILED", "FAILED")
