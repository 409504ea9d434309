"""The typed config: unknown keys, wrong types, profiles and per-stage effective files."""

from __future__ import annotations

import json

import pytest
import yaml

from covidscan.config import STAGE_SECTIONS, Params, load_params, parse_params, write_effective
from covidscan.errors import ConfigError
from tests.conftest import ROOT


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("profile", ["paper", "demo", "tiny"])
def test_repository_params_parse_for_every_profile(profile):
    p = load_params(ROOT / "params.yaml", profile=profile)
    assert p.profile == profile


def test_paper_values_are_the_defaults():
    p = load_params(ROOT / "params.yaml", profile="paper")
    cnncf = p.models.cnncf
    assert (cnncf.Q, cnncf.L, cnncf.M, cnncf.N) == (1, 1, 2, 2)
    assert p.train.classifier.lr == 0.01 and p.train.classifier.epochs == 40
    assert p.train.csacnet.optimizer == "adam" and p.train.csacnet.batch_size == 10
    assert p.preprocess.ct_slices == 300 and p.preprocess.ct_window_center == -600
    assert p.evaluate.bootstrap == 1000 and p.evaluate.threshold_step == 0.005
    # the file states the same values as the code defaults
    assert p.models.cnncf == Params().models.cnncf


def test_top_level_typo_names_the_key_and_allowed_keys():
    raw = raw_params()
    raw["trian"] = raw.pop("train")
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert "'trian'" in str(err.value) and "train" in str(err.value) and "allowed keys" in str(err.value)


def test_nested_typo_and_wrong_type_are_named():
    raw = raw_params()
    raw["train"]["classifier"]["epochz"] = 3
    with pytest.raises(ConfigError, match=r"train\.classifier\.epochz"):
        parse_params(raw)
    raw = raw_params()
    raw["train"]["classifier"]["epochs"] = "many"
    with pytest.raises(ConfigError, match=r"train\.classifier\.epochs"):
        parse_params(raw)


def test_typo_in_an_inactive_profile_is_caught_with_its_path():
    raw = raw_params()
    raw["profiles"]["tiny"]["preprocess"]["xray_sise"] = 32
    with pytest.raises(ConfigError, match=r"profiles\.tiny\.preprocess\.xray_sise"):
        parse_params(raw, profile="demo")


def test_unknown_profile_is_refused():
    with pytest.raises(ConfigError, match="profile 'gpu' is not defined"):
        parse_params(raw_params(), profile="gpu")


def test_ct_slices_must_be_a_multiple_of_three():
    raw = raw_params()
    raw["preprocess"]["ct_slices"] = 100
    with pytest.raises(ConfigError, match="preprocess.ct_slices"):
        parse_params(raw, profile="paper")


def test_profile_switch_changes_only_the_affected_effective_files(tmp_path):
    raw = raw_params()
    a, b = tmp_path / "a", tmp_path / "b"
    write_effective(parse_params(raw, profile="demo"), a)
    raw["profiles"]["demo"]["synth"]["seed"] = 7  # a change that only the synth stage reads
    write_effective(parse_params(raw, profile="demo"), b)
    changed = {p.stem for p in a.iterdir() if p.read_text() != (b / p.name).read_text()}
    assert changed == {s for s, sections in STAGE_SECTIONS.items() if "synth" in sections}
    assert json.loads((b / "synth.json").read_text())["synth"]["seed"] == 7


def test_effective_file_is_not_rewritten_when_unchanged(tmp_path):
    p = parse_params(raw_params())
    write_effective(p, tmp_path)
    before = {f.name: f.stat().st_mtime_ns for f in tmp_path.iterdir()}
    write_effective(p, tmp_path)
    assert before == {f.name: f.stat().st_mtime_ns for f in tmp_path.iterdir()}
