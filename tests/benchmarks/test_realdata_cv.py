"""benchmarks/realdata_cv.py: its core on a small generated set (seconds), its exit without realdata-dev, and
its folds on the real manifest (skipped when ../shared/realdata-dev is absent)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from covidscan.config import load_params
from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "realdata_cv.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("realdata_cv", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["realdata_cv"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def generated_set(folder: Path, n_groups: int = 16, seed: int = 0) -> pd.DataFrame:
    """A manifest in realdata-dev's format over PNG files: two images per patient, covid = a bright
    lower-lung blotch; source ``a`` has both classes, source ``b`` only covid."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        covid = g % 2 == 0
        source = "b" if g in (0, 2) else "a"
        for j in range(2):
            img = rng.normal(90, 20, (80, 72)).clip(0, 255)
            if covid:
                img[45:75, 10:62] += 90
            path = f"cxr/{'covid' if covid else 'non_covid'}/{g}_{j}.png"
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / path), img.clip(0, 255).astype(np.uint8))
            rows.append({"path": path, "label": "covid" if covid else "non_covid", "patient_id": f"{source}:{g}", "group_id": f"{source}:{g}",
                         "modality": "cxr", "source": source})  # fmt: skip
    m = pd.DataFrame(rows)
    m.to_csv(folder / "manifest.csv", index=False)
    return m


def test_core_on_a_generated_set_scores_every_method_on_grouped_folds(bench, tmp_path):
    data = tmp_path / "data"
    generated_set(data)
    manifest = bench.load_manifest(data)
    params = load_params(ROOT / "params.yaml", profile="tiny")
    setting = bench.Setting(size=32, teachers=("TS1",), epochs=2)
    res = bench.run_modality("cxr", manifest, data, setting, params, n_folds=3, work=tmp_path / "work")

    assert set(res["methods"]) == {"student", "student+TTA", "teachers", "teachers+TTA", "RF 32x32", "LR 32x32"}
    for name, m in res["methods"].items():
        assert 0.0 <= m["auroc"] <= 1.0 and m["ci"][0] <= m["auroc"] <= m["ci"][1], name
        assert 0.0 <= m["sensitivity"] <= 1.0 and 0.0 <= m["specificity"] <= 1.0
        assert len(m["thresholds"]) == 3
        assert m["per_source"]["b"]["note"] == "one class only: no AUROC" and m["per_source"]["b"]["auroc"] != m["per_source"]["b"]["auroc"]
        assert m["per_source"]["a"]["n_pos"] + m["per_source"]["a"]["n_neg"] == 28
    # the planted signal is in the pixels: the baselines find it out of fold
    assert res["methods"]["RF 32x32"]["auroc"] > 0.9 and res["methods"]["LR 32x32"]["auroc"] > 0.9
    # every image scored once, out of fold; a patient's two images always in the same fold
    oof = pd.DataFrame(res["oof"])
    assert len(oof) == 32 and oof.groupby("group_id")["fold"].nunique().max() == 1 and set(oof["fold"]) == {0, 1, 2}
    assert {(m["network"], m["fold"]) for m in res["models"]} == {(n, k) for n in ("TS1", "student") for k in range(3)}
    assert all(m["distilled"] for m in res["models"] if m["network"] == "student")
    probe = {r["features"]: r for r in res["shortcut"]["probe"]}
    assert probe["network input, pixels 16x16"]["n_groups"] == 2
    assert res["shortcut"]["label_purity"]["base_rate"] == 0.5


def test_levers_change_the_network_inputs_and_widths(bench):
    params = load_params(ROOT / "params.yaml", profile="demo")
    img = np.random.default_rng(1).normal(100, 30, (90, 70)).astype(np.float32)
    ref = bench.Setting()
    p = bench.setting_params(params, bench.Setting(size=128, width=2.0, class_weights="none", colormap="gray3", epochs=3))
    assert (p.preprocess.xray_size, p.preprocess.ct_size, p.preprocess.colormap) == (128, 128, "gray3")
    assert p.models.cnncf.stem_width == 2 * params.models.cnncf.stem_width and p.train.class_weights == "none" and p.train.classifier.epochs == 3
    plain = bench.network_inputs([img], "xray", ref, bench.setting_params(params, ref).preprocess)
    from covidscan.preprocess.xray import preprocess_2d

    assert np.array_equal(plain[0], preprocess_2d(img, bench.setting_params(params, ref).preprocess, kind="xray"))  # the serving path itself
    clahe = bench.network_inputs([img], "xray", bench.Setting(intensity="clahe"), bench.setting_params(params, ref).preprocess)
    assert clahe.shape == plain.shape == (1, 3, 64, 64) and not np.array_equal(clahe, plain)
    assert bench.Setting(width=2.0, teachers=()).label(ref) == "width=2.0 teachers=none"


def test_without_realdata_it_says_so_and_exits(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "DEFAULT_DATA", tmp_path / "absent")
    assert bench.main(["--out", str(tmp_path / "r.json")]) == 0  # the default location: nothing to benchmark
    assert "not found" in capsys.readouterr().err
    assert bench.main([str(tmp_path / "elsewhere"), "--out", str(tmp_path / "r.json")]) == 2  # a folder named that is not there
    assert not (tmp_path / "r.json").exists()


@pytest.mark.realdata
def test_real_manifest_folds_keep_patients_together(bench, realdata):
    manifest = bench.load_manifest(realdata)
    assert (manifest["modality"] == "cxr").sum() == 118 and (manifest["modality"] == "ct").sum() == 200
    for mod in ("cxr", "ct"):
        rows = manifest[manifest["modality"] == mod].reset_index(drop=True)
        fold = bench.assign_folds(rows, 5, 42)
        rows["fold"] = fold
        assert rows.groupby("group_id")["fold"].nunique().max() == 1
        assert all(set(rows.loc[rows["fold"] == k, "label"]) == {"covid", "non_covid"} for k in range(5))


def test_report_is_json_clean(bench):
    assert json.loads(json.dumps(bench.json_clean({"a": float("nan"), "b": np.float32(0.5), "c": (np.int64(2),)}))) == {"a": None, "b": 0.5, "c": [2]}


def test_sweep_over_seeds_end_to_end_writes_the_report(bench, tmp_path, capsys):
    data = tmp_path / "data"
    generated_set(data, n_groups=12)
    out = tmp_path / "sweep.json"
    argv = [str(data), "--profile", "tiny", "--modality", "cxr", "--folds", "3", "--size", "32", "--teachers", "none", "--sweep", "--levers", "6",
            "--seeds", "1,2", "--out", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert [r["setting"] for r in report["sweep"]] == ["reference", "class_weights=none"]
    ref = report["sweep"][0]
    assert len(ref["auroc_seeds"]["student"]) == 2 and "RF 32x32" in ref["auroc_seeds"]  # baselines on the reference only
    assert "RF 32x32" not in report["sweep"][1]["auroc_seeds"]
    assert report["machine"]["torch_threads"] >= 1 and report["command"].endswith(str(out))
    assert "| cxr | class_weights=none |" in capsys.readouterr().out
