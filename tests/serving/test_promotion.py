"""The promotion gate: unit behaviour, and the real registry flow with two tiny models of known quality
(a trained X-ray student, AUROC ~1, and the same network with its head zeroed, AUROC exactly 0.5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

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


def test_specificity_floor_refuses_a_model_that_calls_everyone_positive():
    """The demo's champion: AUROC 1 but every score above its threshold 0.5 (sensitivity 1, specificity 0)."""
    y = np.array([0, 1] * 30)
    s = 0.6 + 0.3 * y
    first = classifier_gate(y, s, 0.5, CFG)
    assert first.challenger["auroc"] == 1.0 and first.challenger["specificity"] == 0.0
    assert not first.promote and "specificity 0.0000 < floor" in first.reason
    assert not classifier_gate(y, s, 0.5, CFG, _scores(y, 0.3, 5), 0.5).promote
    at_its_threshold = classifier_gate(y, s, 0.75, CFG)  # a threshold chosen on validation data
    assert at_its_threshold.promote, at_its_threshold.reason
    assert at_its_threshold.as_tags()["gate.rule.min_specificity"] == f"{CFG.min_specificity:.6g}"


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


def test_a_model_whose_gate_never_opened_is_refused_with_the_reason_on_the_version(registry):
    """The training loop records the closed gate on the model card; the card travels through the real
    (sqlite) registry, and the promotion gate refuses the version, saying why, in its tags."""
    from torch.utils.data import TensorDataset

    from covidscan.config import OptimConfig, RunConfig
    from covidscan.models.zoo import build_model
    from covidscan.tracking.registry import resolve_version, version_by_alias
    from covidscan.training.loop import train

    name = tm.NAMES["xray"]
    params, data = _params(), _gate_data(registry)
    never = tm.TINY_MODELS.model_copy(update={"cnncf": tm.TINY_MODELS.cnncf.model_copy(update={"ths_sens": 1.0, "ths_count": 1000})})
    model = build_model("student", never, input_size=32, class_labels=tm.LABELS, kind="image2d")
    x, y = tm.bright_dark_images(16, seed=3)
    ds = TensorDataset(torch.from_numpy(x).float() / 255.0, torch.from_numpy(y).long())
    result = train(model, ds, ds, optim=OptimConfig(epochs=1, batch_size=8, lr=0.01, warmup_epochs=0), class_weights="none",
                   run=RunConfig(seed=0, deterministic=True, device="cpu", num_workers=0))  # fmt: skip
    assert result.gate_opened is False and model.card.gate_opened is False

    version = tm.register(model.eval(), name)
    ver, decision = gate_registered(name, None, params, data)
    assert ver == version and not decision.promote and "never opened" in decision.reason
    tags = resolve_version(name, version).tags
    assert tags["gate.decision"] == "kept champion" and "never opened" in tags["gate.reason"]
    assert tags["gate.challenger.gate_opened"] == "0"
    assert version_by_alias(name, "champion") is None


def test_promote_cli_without_data_is_one_clear_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from covidscan.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("profile: paper\n")
    result = CliRunner().invoke(app, ["promote", "covidscan-student-xray"])
    assert result.exit_code != 0 and "not found" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------ regressors (CNNRF)
def _crop_gate_data(tmp_path, n: int = 24) -> tuple[GateData, Params]:
    """CA-like test set: lesion crops per record and the clinical table."""
    rng = np.random.default_rng(4)
    processed = tmp_path / "processed"
    (processed / "lesion_crop").mkdir(parents=True)
    rows, clinical = [], []
    for i in range(n):
        rid = f"c{i:03d}"
        np.save(processed / "lesion_crop" / f"{rid}.npy", rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
        rows.append({"record_id": rid, "label": "covid19", "input_kind": "ct_stack", "image_path": "", "volume_path": "",
                     "crops_path": f"lesion_crop/{rid}.npy", "grey_path": ""})  # fmt: skip
        clinical.append({"record_id": rid, **dict(zip(tm.TARGET_RANGE["names"], rng.uniform(tm.TARGET_RANGE["low"], tm.TARGET_RANGE["high"])))})
    index = pd.DataFrame(rows)
    splits = pd.DataFrame({"record_id": index["record_id"], "subset": "CADS", "part": "test", "label": "covid19"})
    manifest = pd.DataFrame({"record_id": index["record_id"], "source": "synthetic", "centre": "c"})
    params = Params(
        subsets={"CADS": SubsetSpec(modality="ct", classes=["covid19"])},
        experiments={"CA": ExperimentSpec(subsets=["CADS"], positive=["covid19"], negative=[], model="cnnrf")},
        preprocess=tm.TINY_PRE,
        registry=RegistryConfig(bootstrap=200),
    )
    return GateData(processed, splits, index, manifest, pd.DataFrame(clinical)), params


def _rescaled(model, old: dict, new: dict):
    """The same network, its last Linear changed so that its outputs on ``new``'s scale are the same raw values."""
    import torch

    from covidscan.models.zoo import build_model

    a = (np.asarray(old["high"]) - np.asarray(old["low"])) / (np.asarray(new["high"]) - np.asarray(new["low"]))
    b = (np.asarray(old["low"]) - np.asarray(new["low"])) / (np.asarray(new["high"]) - np.asarray(new["low"]))
    twin = build_model("cnnrf", tm.TINY_MODELS, input_size=32, kind="lesion_crop", target_range=new)
    twin.load_state_dict(model.state_dict())
    last = [m for m in twin.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(torch.as_tensor(a, dtype=torch.float32)[:, None])
        last.bias.copy_(last.bias * torch.as_tensor(a, dtype=torch.float32) + torch.as_tensor(b, dtype=torch.float32))
    return twin.eval()


@pytest.mark.slow  # registers real models in MLflow
def test_regressor_gate_scores_both_models_in_their_own_training_range(tmp_path):
    """A champion trained on another range but predicting the same raw values scores the same MSE."""
    from covidscan.evaluation.promotion import gate_models

    data, params = _crop_gate_data(tmp_path)
    challenger = tm.build("indicators", seed=3)
    other = {"names": tm.TARGET_RANGE["names"], "low": [0.5, 30.0, 2.0, 0.0, 0.0], "high": [30.0, 99.0, 70.0, 10.0, 300.0]}
    champion = _rescaled(challenger, tm.TARGET_RANGE, other)
    d = gate_models(challenger, champion, params.experiments["CA"], data, params)
    assert d.metric == "mse" and d.challenger["n"] == 24
    assert d.champion["mse"] == pytest.approx(d.challenger["mse"], rel=1e-4)
    # the challenger's scale: the clinical values normalised with its card's range
    from covidscan.evaluation.experiment import run_model

    outs = run_model(challenger, data.index, data.processed_dir, params.preprocess).outputs
    truth = challenger.card.target_range.normalise(data.clinical[list(tm.TARGET_RANGE["names"])].to_numpy(float))
    assert d.challenger["mse"] == pytest.approx(float(np.mean((truth - outs) ** 2)), rel=1e-6)


def test_regressor_gate_refuses_a_model_without_its_range(tmp_path):
    from covidscan.evaluation.promotion import gate_models
    from covidscan.models.card import MissingTargetRange
    from covidscan.models.zoo import build_model

    data, params = _crop_gate_data(tmp_path, n=6)
    bare = build_model("cnnrf", tm.TINY_MODELS, input_size=32, kind="lesion_crop").eval()
    with pytest.raises(MissingTargetRange, match="covidscan-cnnrf v7"):
        gate_models(bare, None, params.experiments["CA"], data, params, ("covidscan-cnnrf v7", ""))
    with pytest.raises(MissingTargetRange, match="v2 \\(champion\\)"):
        gate_models(tm.build("indicators"), bare, params.experiments["CA"], data, params, ("v3", "v2 (champion)"))


@pytest.mark.slow
def test_a_registered_regressor_keeps_its_range(registry):
    """export_checkpoint (what the gate and the bento import use) puts the range back on the card; versions
    logged before the range moved onto the card (top-level target_min/target_max) keep theirs too."""
    from covidscan.models.zoo import build_model, load_model
    from covidscan.tracking.registry import export_checkpoint

    name = tm.NAMES["indicators"]
    v1 = tm.register(tm.build("indicators", seed=1), name)
    export_checkpoint(name, v1, registry / "v1.pt")
    assert load_model(registry / "v1.pt").card.target_range.to_dict() == tm.TARGET_RANGE
    legacy = build_model("cnnrf", tm.TINY_MODELS, input_size=32, kind="lesion_crop").eval()
    v2 = tm.register(legacy, name, {"target_min": tm.TARGET_RANGE["low"], "target_max": tm.TARGET_RANGE["high"]})
    export_checkpoint(name, v2, registry / "v2.pt")
    assert load_model(registry / "v2.pt").card.require_target_range("v2").to_dict() == tm.TARGET_RANGE


@pytest.mark.slow  # registers real models in MLflow (~1 min each)
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
