"""The `split` and `validate` stage entry points, run in-process on a tiny ingest folder."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ingest_fixture.py

from ingest_fixture import SPLITS, SUBSETS, build_ingest  # noqa: E402
from tests.conftest import stage_exit_code, write_stage_params  # noqa: E402

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda argv: stage_exit_code(module.main, argv)  # as `python -m pipelines.<name>` runs it


@pytest.fixture
def project(tmp_path, monkeypatch):
    build_ingest(tmp_path / "data" / "interim" / "ingest", seed=5)
    params = {
        "run": {"seed": 5},
        "subsets": {k: v.model_dump(mode="json") for k, v in SUBSETS.items()},
        "splits": SPLITS.model_dump(mode="json"),
        "validate": {"max_examples": 3},
    }
    for stage in ("split", "validate"):
        write_stage_params(tmp_path, stage, params)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_split_then_validate(project, capsys):
    assert _stage("split")([]) == 0
    table = pd.read_parquet(project / "data" / "splits" / "splits.parquet")
    assert set(table["subset"]) == set(SUBSETS) | set(SPLITS.mixed)
    assert json.loads((project / "data" / "splits" / "summary.json").read_text())["seed"] == 5
    assert _stage("validate")([]) == 0
    summary = json.loads((project / "reports" / "validation" / "summary.json").read_text())
    assert summary["success"] is True and any(s["name"] == "splits.groups" for s in summary["suites"])
    assert (project / "reports" / "validation" / "docs" / "index.html").is_file()

    # a leak planted in the split table: one record of a two-record group moves to test (in XPDS and
    # its union XMDS); the stage fails, names the group on stderr, and still writes its summary
    leaked = table.copy()
    xp = leaked[(leaked["subset"] == "XPDS") & (leaked["part"] == "trainval")]
    group = xp.groupby("group_id").filter(lambda g: len(g) > 1)["group_id"].iloc[0]
    record = xp.loc[xp["group_id"] == group, "record_id"].iloc[0]
    leaked.loc[leaked["record_id"] == record, ["part", "fold"]] = ["test", -1]
    leaked.to_parquet(project / "data" / "splits" / "splits.parquet", index=False)
    capsys.readouterr()
    code = _stage("validate")([])
    err = capsys.readouterr().err
    assert code != 0
    assert "error: data validation FAILED" in err
    assert "no near-duplicate group in both train-val and test" in err and f"group_id={group}" in err
    assert json.loads((project / "reports" / "validation" / "summary.json").read_text())["success"] is False


def test_split_stage_reports_user_errors(project, capsys):
    assert _stage("split")(["--ingest", "nowhere"]) != 0
    assert "error: nowhere/manifest.parquet: ingest manifest not found" in capsys.readouterr().err
