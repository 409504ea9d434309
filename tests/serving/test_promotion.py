"""The promotion gate: unit behaviour, and the real registry flow with two tiny models of known quality
(a trained X-ray student, AUROC ~1, and the same network with its head zeroed, AUROC exactly 0.5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidscan.config import ExperimentSpec, Params, RegistryConfig, SubsetSpec
from covidscan.errors import DataError
from covidscan.evaluation.promotion import GateData, classifier_gate, gate_registered, regressor_gate
from tests.serving import tiny_models as tm

CFG = RegistryConfig(bootstrap=200)


def _scores(y: np.ndarray, quality: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(quality * y + (1 - quality) * rng.random(y.size) + 0.05 * rng.standard_normal(y.size), 0, 1)


def test_first_model_needs_the_sensitivity_floor_and_an_auroc_above_chance():
    y = np.array([0, 1] * 30)
    good = classifier_gate(y, _scores(y, 0.9, 0), 0.5, CFG)
    assert good.promote and good.champion == {} and good.challenger["sensitivity"] >= CFG.min_sensitivity
    assert not classifier_gate(y, np.zeros(y.size), 0.5, CFG).promote  # calls nobody positive
    assert not classifier_gate(y, np.ones(y.size), 0.5, CFG).promote  # calls everyone positive: AUROC 0.5


@pytest.mark.parametrize(("challenger_q", "champion_q", "promote"), [(0.9, 0.3, True), (0.3, 0.9, False), (0.9, 0.9, True)])
def test_gate_compares_on_the_same_cases(challenger_q, champion_q, promote):
    y = np.array([0, 1] * 40)
    d = classifier_gate(y, _scores(y, challenger_q, 1), 0.5, CFG, _scores(y, champion_q, 2), 0.5)
    assert d.promote is promote, d.reason
    tags = d.as_tags()
    assert tags["gate.decision"] == ("promoted" if promote else "kept champion")
    assert float(tags["gate.challenger.auroc_low"]) <= float(tags["gate.challenger.auroc"]) <= float(tags["gate.challenger.auroc_high"])
    assert "gate.champion.auroc" in tags and "gate.rule.auroc_margin" in tags


def test_sensitivity_floor_blocks_a_better_ranking_model():
    y = np.array([0, 1] * 40)
    s = _scores(y, 0.9, 3) * 0.4  # perfect ranking, but nobody crosses 0.5
    d = classifier_gate(y, s, 0.5, CFG, _scores(y, 0.5, 4), 0.5)
    assert not d.promote and "sensitivity" in d.reason


def test_gate_refuses_one_class_and_misaligned_sets():
    with pytest.raises(DataError, match="both classes"):
        classifier_gate(np.ones(10), np.ones(10), 0.5, CFG)
    with pytest.raises(DataError):
        classifier_gate(np.array([0, 1]), np.ones(3), 0.5, CFG)


def test_regressor_gate():
    rng = np.random.default_rng(0)
    t = rng.random((40, 5))
    good, bad = t + 0.01 * rng.standard_normal(t.shape), rng.random((40, 5))
    assert regressor_gate(t, good, CFG, bad).promote
    assert not regressor_gate(t, bad, CFG, good).promote
    assert regressor_gate(t, bad, CFG).promote  # the first model


# ------------------------------------------------------------------------ registry, end to end
@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("COVIDSCAN_ARTIFACT_ROOT", (tmp_path / "mlartifacts").as_uri())
    return tmp_path


def _gate_data(tmp_path) -> GateData:
    """An experiment's test set as the evaluate stage reads it: splits, index, manifest, arrays."""
    x, y = tm.bright_dark_images(40, seed=11)
    processed = tmp_path / "processed"
    (processed / "xray").mkdir(parents=True)
    rows = []
    for i in range(len(y)):
        rid = f"r{i:03d}"
        np.save(processed / "xray" / f"{rid}.npy", x[i])
        rows.append({"record_id": rid, "label": "covid19" if y[i] else "normal", "input_kind": "xray", "image_path": f"xray/{rid}.npy",
                     "volume_path": "", "crops_path": "", "grey_path": ""})  # fmt: skip
    index = pd.DataFrame(rows)
    splits = pd.DataFrame({"record_id": index["record_id"], "subset": "XPDS", "part": "test", "label": index["label"]})
    manifest = pd.DataFrame({"record_id": index["record_id"], "source": "synthetic", "centre": "c", "rtpcr_initial": "", "rows": 32, "cols": 32,
                             "n_slices": 1, "spacing_slice": float("nan"), "severity": float("nan")})  # fmt: skip
    return GateData(processed, splits, index, manifest)


def _params() -> Params:
    return Params(
        subsets={"XPDS": SubsetSpec(modality="xray", classes=["normal", "covid19"])},
        experiments={"A": ExperimentSpec(subsets=["XPDS"], positive=["covid19"], negative=["normal"], model="student-xray")},
        preprocess=tm.TINY_PRE,
        registry=RegistryConfig(bootstrap=200, min_sensitivity=0.5),
    )


@pytest.mark.slow
def test_registry_keeps_the_champion_against_a_worse_challenger_and_moves_it_for_a_better_one(registry):
    from covidscan.tracking.registry import resolve_version, rollback, version_by_alias

    name = tm.NAMES["xray"]
    params, data = _params(), _gate_data(registry)
    card = registry / "model_card.html"
    card.write_text("<html>card</html>")
    trained = tm.train_xray(steps=40, seed=0)
    flat = tm.constant(tm.train_xray(steps=1, seed=1))

    v1 = tm.register(flat, name)  # constant scores: AUROC 0.5, calls everyone positive
    _, refused = gate_registered(name, None, params, data, card)
    assert not refused.promote and "AUROC CI low" in refused.reason  # chance level is no first champion
    ver, d1 = gate_registered(name, None, params, data, card, force=True)  # an operator's decision
    assert ver == v1 and d1.promote and str(version_by_alias(name, "champion").version) == v1

    v2 = tm.register(trained, name)  # better: promoted, v1 kept as previous-champion
    _, d2 = gate_registered(name, None, params, data, card)
    assert d2.promote, d2.reason
    assert d2.challenger["auroc"] > 0.95 and d2.champion["auroc"] == pytest.approx(0.5)
    assert str(version_by_alias(name, "champion").version) == v2
    assert str(version_by_alias(name, "previous-champion").version) == v1

    v3 = tm.register(tm.constant(tm.train_xray(steps=1, seed=2)), name)  # worse: the champion stays
    _, d3 = gate_registered(name, None, params, data, card)
    assert not d3.promote and "AUROC CI low" in d3.reason
    assert str(version_by_alias(name, "champion").version) == v2
    assert str(version_by_alias(name, "challenger").version) == v3
    tags = resolve_version(name, v3).tags
    assert tags["gate.decision"] == "kept champion" and tags["gate.experiment"] == "A" and tags["gate.champion_version"] == v2
    assert tags["covidscan.model_card"].endswith("model_card/model_card.html") and "covidscan.preprocess" in tags
    assert resolve_version(name, v2).tags["gate.decision"] == "promoted"

    now, prev = rollback(name)
    assert (now, prev) == (v1, v2) and str(version_by_alias(name, "champion").version) == v1

    from typer.testing import CliRunner

    from covidscan.cli import app

    result = CliRunner().invoke(app, ["rollback", name, "--params", str(registry / "absent.yaml")])
    assert result.exit_code == 0, result.output
    assert str(version_by_alias(name, "champion").version) == v2
    result = CliRunner().invoke(app, ["rollback", "covidscan-unknown", "--params", str(registry / "absent.yaml")])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_promote_cli_without_data_is_one_clear_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from covidscan.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("profile: paper\n")
    result = CliRunner().invoke(app, ["promote", "covidscan-student-xray"])
    assert result.exit_code != 0 and "not found" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("by_source", [True, False])
def test_gate_records_a_source_confounded_test_set_on_the_version(registry, by_source):
    """Experiment A's layout (covid19 only from ccd, normal only from rsna): a note, a tag, the description."""
    from covidscan.tracking.registry import resolve_version

    name = tm.NAMES["xray"]
    params, data = _params(), _gate_data(registry)
    y = (data.index["label"] == "covid19").to_numpy()
    data.manifest["source"] = np.where(y, "ccd", "rsna") if by_source else np.where(np.arange(y.size) % 4 < 2, "ccd", "rsna")
    version = tm.register(tm.train_xray(steps=40, seed=0), name)
    ver, decision = gate_registered(name, None, params, data)
    assert ver == version
    mv = resolve_version(name, ver)
    if by_source:
        assert decision.notes and "source determines the label for 100.0%" in decision.notes[0]
        assert "CONFOUNDED" in mv.tags["covidscan.confound"] and mv.tags["gate.notes"] == decision.notes[0]
        assert mv.tags["gate.confound.by"] == "source" and float(mv.tags["gate.confound.purity"]) == 1.0
        assert "CONFOUNDED" in mv.description and "experiment A" in mv.description
    else:
        assert decision.notes == () and mv.tags["covidscan.confound"] == "none" and "gate.notes" not in mv.tags
        assert "CONFOUNDED" not in mv.description
