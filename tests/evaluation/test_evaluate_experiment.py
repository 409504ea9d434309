"""The evaluate stage's classifier part, in process, on small hand-made test sets with real tiny models.

Experiment A's layout (every covid19 X-ray from one source, every normal from another) must carry a
confound warning in its metrics and at the top of its card, and no rows for Yao et al.'s subsets; experiment S
must score the baselines stage's 3D ResNet, SVM and random forest on its own test volumes with CIs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from covidscan.config import EvaluateConfig, ExperimentSpec, Params, SplitsConfig, SubsetSpec
from tests.serving import tiny_models as tm

YAO = {"covid19": "S1", "normal": "S2", "pneumonia": "S3"}  # as data.splits writes it, for every subset


def _tables(tmp_path, rows: list[dict], manifest: list[dict], subset: str) -> None:
    index = pd.DataFrame(rows)
    (tmp_path / "data" / "splits").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "interim" / "ingest").mkdir(parents=True, exist_ok=True)
    index.to_parquet(tmp_path / "data" / "processed" / "index.parquet")
    splits = pd.DataFrame({"record_id": index["record_id"], "subset": subset, "part": "test", "label": index["label"],
                           "yao_subset": index["label"].map(YAO).fillna("")})  # fmt: skip
    splits.to_parquet(tmp_path / "data" / "splits" / "splits.parquet")
    pd.DataFrame(manifest).to_parquet(tmp_path / "data" / "interim" / "ingest" / "manifest.parquet")


def _manifest_row(rid: str, source: str, centre: str) -> dict:
    return {"record_id": rid, "source": source, "centre": centre, "rtpcr_initial": "", "rows": 32, "cols": 32, "n_slices": 8,
            "spacing_slice": 5.0, "severity": float("nan")}  # fmt: skip


def _params(**experiments: ExperimentSpec) -> Params:
    return Params(
        subsets={"XPDS": SubsetSpec(modality="xray", classes=["normal", "covid19"]),
                 "CSDS": SubsetSpec(modality="ct", classes=["normal", "pneumonia", "covid19"])},
        experiments=experiments, splits=SplitsConfig(centre_subsets=["CSDS"]), preprocess=tm.TINY_PRE,
        evaluate=EvaluateConfig(bootstrap=30),
    )  # fmt: skip


@pytest.fixture
def xray_set(tmp_path, monkeypatch):
    """24 X-rays (bright blob = covid19); ``layout`` decides which source each class comes from."""
    monkeypatch.chdir(tmp_path)

    def make(layout: str):
        from covidscan.models.zoo import save_model

        x, y = tm.bright_dark_images(24, seed=5)
        (tmp_path / "data" / "processed" / "xray").mkdir(parents=True, exist_ok=True)
        rows, manifest = [], []
        for i in range(len(y)):
            rid, label = f"x{i:03d}", "covid19" if y[i] else "normal"
            np.save(tmp_path / "data" / "processed" / "xray" / f"{rid}.npy", x[i])
            rows.append({"record_id": rid, "label": label, "input_kind": "xray", "image_path": f"xray/{rid}.npy", "volume_path": "",
                         "crops_path": "", "grey_path": ""})  # fmt: skip
            source = ("ccd" if y[i] else "rsna") if layout == "by_source" else ("ccd" if i % 4 < 2 else "rsna")
            manifest.append(_manifest_row(rid, source, f"{source}_centre"))
        _tables(tmp_path, rows, manifest, "XPDS")
        save_model(tm.build("xray"), tmp_path / "models" / "student-xray.pt")
        params = _params(A=ExperimentSpec(subsets=["XPDS"], positive=["covid19"], negative=["normal"], model="student-xray"))
        return params

    return make


def _evaluate(tmp_path, params, name):
    from covidscan.evaluation.experiment_run import EvaluationInputs, evaluate_experiment

    data = tmp_path / "data"
    inputs = EvaluationInputs.from_ingest(data / "processed", data / "splits" / "splits.parquet", data / "interim" / "ingest")
    out = evaluate_experiment(params, name, inputs, tmp_path / "models", tmp_path / "metrics", tmp_path / "reports", max_cam=1)
    return json.loads(out.metrics_path.read_text()), out.card_path.read_text()


def test_a_source_confounded_experiment_is_flagged_and_has_no_yao_subset_rows(tmp_path, xray_set):
    metrics, card = _evaluate(tmp_path, xray_set("by_source"), "A")
    assert metrics["confound.by"] == "source" and metrics["confound.purity"] == 1.0 and metrics["confound.confounded"] is True
    assert metrics["confound.base_rate"] == pytest.approx(0.5) and metrics["confound.warn_at"] == 0.95
    assert "source determines the label" in metrics["confound.warning"]
    warning = card.index('class="warning"')
    assert warning < card.index("Intended use") and "source determines the label for 100.0%" in card
    assert "Confound check" in card
    # Yao et al.'s S1/S2/S3 rows belong to its centre-held-out experiment, not to A
    assert not any(k.startswith("subsets.S1 vs") for k in metrics)
    assert "S1 vs S2" not in card


def test_a_mixed_source_experiment_has_no_confound_warning(tmp_path, xray_set):
    metrics, card = _evaluate(tmp_path, xray_set("mixed"), "A")
    assert metrics["confound.confounded"] is False and metrics["confound.warning"] == ""
    assert metrics["confound.purity"] == pytest.approx(0.5)
    assert 'class="warning"' not in card


def test_label_purity_and_confound_check():
    from covidscan.explain.shortcut import confound_check, label_purity

    labels = np.array(["covid19"] * 10 + ["normal"] * 10)
    assert label_purity(labels, ["a"] * 10 + ["b"] * 10) == 1.0
    assert label_purity(labels, ["a"] * 9 + ["b"] * 11) == 0.95
    assert label_purity(labels, ["a", "b"] * 10) == 0.5
    flagged = confound_check(labels, {"source": ["a"] * 9 + ["b"] * 11, "centre": ["c"] * 20}, warn_at=0.95)
    assert flagged["confounded"] and flagged["by"] == "source" and flagged["purity"] == 0.95
    one_group = confound_check(np.array(["covid19"] * 19 + ["normal"]), {"source": ["a"] * 20}, warn_at=0.95)
    assert not one_group["confounded"]  # a 95%-one-class set from one source: the source tells nothing


# --------------------------------------------------------------------- Yao et al.'s comparison (S)
def test_experiment_s_reports_the_baselines_side_by_side(tmp_path, monkeypatch):
    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from covidscan.models.baselines import save_feature_settings, volume_features
    from covidscan.models.zoo import build_model, save_model

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    labels = ["covid19", "normal", "pneumonia"] * 8

    def volume(label: str) -> np.ndarray:
        return np.clip(rng.normal(0.6 if label == "covid19" else 0.4, 0.1, (8, 32, 32)), 0, 1).astype(np.float16)

    (tmp_path / "data" / "processed" / "volumes").mkdir(parents=True)
    rows, manifest = [], []
    for i, label in enumerate(labels):
        rid = f"v{i:03d}"
        np.save(tmp_path / "data" / "processed" / "volumes" / f"{rid}.npy", volume(label))
        rows.append({"record_id": rid, "label": label, "input_kind": "ct_stack", "image_path": f"volumes/{rid}.npy",
                     "volume_path": f"volumes/{rid}.npy", "crops_path": "", "grey_path": ""})  # fmt: skip
        manifest.append(_manifest_row(rid, "hospital", "centre_d"))
    _tables(tmp_path, rows, manifest, "CSDS")

    volume_classes = ["non-covid19", "covid19"]
    net = dict(input_size=(8, 32, 32), num_classes=2, class_labels=volume_classes, kind="ct_volume")
    save_model(build_model("csacnet", tm.TINY_MODELS, **net).eval(), tmp_path / "models" / "csacnet.pt")
    folder = tmp_path / "models" / "baselines"
    save_model(build_model("resnet3d", tm.TINY_MODELS, threshold=0.4, **net).eval(), folder / "resnet3d.pt")
    train_labels = ["covid19", "normal"] * 10
    x_train = volume_features((volume(lb)[None].astype(np.float32) for lb in train_labels), 2, 4)
    y_train = np.array([lb == "covid19" for lb in train_labels], dtype=int)
    svm = make_pipeline(StandardScaler(), SVC(class_weight="balanced")).fit(x_train, y_train)
    joblib.dump(svm, folder / "svm.joblib")
    joblib.dump(RandomForestClassifier(n_estimators=20, random_state=0).fit(x_train, y_train), folder / "random_forest.joblib")
    save_feature_settings(folder, 2, 4)

    spec = ExperimentSpec(subsets=["CSDS"], positive=["covid19"], negative=["normal", "pneumonia"], model="csacnet", baselines="baselines")
    metrics, card = _evaluate(tmp_path, _params(S=spec), "S")
    for model in ("csacnet", "resnet3d", "svm", "random_forest"):
        for index in ("auroc", "sensitivity", "specificity"):
            low, point, high = (metrics[f"comparison.{model}.{index}.{k}"] for k in ("low", "point", "high"))
            assert low <= point <= high, (model, index)
        assert metrics[f"comparison.{model}.n"] == len(labels) and metrics[f"comparison.{model}.n_positive"] == 8
    assert metrics["comparison.resnet3d.threshold"] == pytest.approx(0.4)  # each model at its own threshold
    assert metrics["comparison.svm.threshold"] == metrics["comparison.random_forest.threshold"] == 0.5
    # the SVM is scored on the same volumes' features as it was trained: its AUROC is the decision function's
    y = np.array([lb == "covid19" for lb in labels], dtype=int)
    x_test = volume_features((np.load(tmp_path / "data" / "processed" / r["volume_path"]).astype(np.float32)[None] for r in rows), 2, 4)
    assert metrics["comparison.svm.auroc.point"] == pytest.approx(roc_auc_score(y, svm.decision_function(x_test)), abs=0.01)
    assert metrics["comparison.svm.auroc.point"] > 0.9  # the planted brightness is learnt
    assert metrics["comparison.csacnet.auroc.point"] == pytest.approx(metrics["auroc_ci.point"], abs=1e-12)
    assert "Comparison with the baselines" in card
    for model in ("csacnet", "resnet3d", "svm", "random_forest"):
        assert f"<td>{model}</td>" in card
    assert any(k.startswith("subsets.S1 vs S2+S3.") for k in metrics)  # S keeps Yao et al.'s subsets


def test_an_experiment_the_data_cannot_make_is_skipped_with_why(tmp_path, xray_set):
    from covidscan.models.zoo import write_empty_model

    params = xray_set("by_source")
    # CTS: its sub-dataset has no test records; B: its model is the empty marker of a task with nothing to train
    write_empty_model(tmp_path / "models" / "student-ct-slice.pt")
    params = params.model_copy(update={"experiments": {
        **params.experiments,
        "CTS": ExperimentSpec(subsets=["CTSDS"], positive=["covid19"], negative=["normal"], model="student-xray"),
        "B": ExperimentSpec(subsets=["XPDS"], positive=["covid19"], negative=["normal"], model="student-ct-slice"),
    }})  # fmt: skip
    for name, why in (("CTS", "no test record in subsets ['CTSDS']"), ("B", "no model was trained")):
        metrics, card = _evaluate(tmp_path, params, name)
        assert metrics["skipped"] is True and why in metrics["why"]
        assert "auroc" not in json.dumps(metrics)
        assert "experiment skipped" in card
        assert (tmp_path / "reports" / name / "roc.csv").read_text() == "fpr,tpr,threshold\n"
    metrics, _ = _evaluate(tmp_path, params, "A")  # the experiment the data makes still runs
    assert "skipped" not in metrics and "auroc" in metrics  # the tiny model is untrained: no claim on its value
