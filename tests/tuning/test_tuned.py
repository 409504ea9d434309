"""The tuned file in config resolution: use_tuned builds the tuned student; switching it touches only distill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covidscan.config import write_effective
from covidscan.tuning.objective import TuneData
from covidscan.errors import ConfigError
from covidscan.training.tasks import build_classifier
from covidscan.tuning.study import run_tuning
from covidscan.tuning.tuned import apply_values, read_tuned, resolve_tuned, tuned_params, write_tuned
from tests.tuning.conftest import params


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"M": 1, "N": 1, "width_scale": 2.0}, {"M": 1, "widths_stage1": [8], "widths_stage2": [8], "stem_width": 4}),
        ({"M": 3, "L": 0, "N": 1, "width_scale": 0.5}, {"M": 3, "L": 0, "widths_stage1": [2, 2, 2], "width_stage1_b": 2}),
    ],
)
def test_use_tuned_builds_the_tuned_student(tmp_path: Path, values: dict, expected: dict) -> None:
    base = params({"tune": {"output": str(tmp_path / "tuned.yaml")}})
    write_tuned(base.tune.output, {"student-xray": {"status": "tuned", "values": values, "apply": apply_values(base, {**values, "lr": 0.05})}})
    on = resolve_tuned(params({"tune": {"use_tuned": True, "output": base.tune.output}}))
    p = tuned_params(on, "student-xray")
    for key, value in expected.items():
        assert getattr(p.models.cnncf, key) == value
    assert p.train.classifier.lr == 0.05
    model = build_classifier("student", p.models, "xray", p.preprocess)
    assert len(model.stages1[0].blocks_a) == expected["M"]
    assert model.card.build["models"]["cnncf"]["widths_stage1"] == p.models.cnncf.widths_stage1
    off = resolve_tuned(base)  # use_tuned false: the configured student
    assert tuned_params(off, "student-xray").models.cnncf == base.models.cnncf


def test_switching_use_tuned_changes_only_the_tuned_stages_effective_params(tmp_path: Path) -> None:
    out = str(tmp_path / "tuned.yaml")
    base = params({"tune": {"output": out}})
    write_tuned(out, {"student-xray": {"apply": apply_values(base, {"M": 1})}})
    a, b = tmp_path / "off", tmp_path / "on"
    write_effective(resolve_tuned(base), a)
    write_effective(resolve_tuned(params({"tune": {"output": out, "use_tuned": True}})), b)
    changed = sorted(p.name for p in a.iterdir() if p.read_text() != (b / p.name).read_text())
    assert changed == ["distill.json", "tune.json"]  # the student's stage (and the tune stage, whose section holds the switch)
    assert json.loads((b / "distill.json").read_text())["tune"]["tuned"]["student-xray"]["cnncf"]["M"] == 1


def test_use_tuned_without_a_tuned_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tuned.yaml"):
        resolve_tuned(params({"tune": {"use_tuned": True, "output": str(tmp_path / "tuned.yaml")}}))


def test_frozen_budget_writes_the_configured_values_quickly(project: Path) -> None:
    p = params({"tune": {"n_trials": 0}})
    path = run_tuning(p, data=TuneData(Path("data/processed"), Path("data/splits/splits.parquet")))
    entry = read_tuned(path)["student-xray"]
    assert entry["status"] == "untuned" and entry["trials"] == {"complete": 0, "pruned": 0, "fail": 0}
    assert tuned_params(p, "student-xray", entry["apply"]).models.cnncf == p.models.cnncf
