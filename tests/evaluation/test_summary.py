"""evaluate_binary end to end: numbers agree with the parts, files are written, card renders."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from covidscan.config import EvaluateConfig
from covidscan.errors import DataError
from covidscan.evaluation.report import write_metrics_json, write_model_card
from covidscan.evaluation.summary import evaluate_binary, operating_threshold


def _data(n: int = 90):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)
    reads = {
        "Rad-5th": np.where(rng.uniform(size=n) < 0.9, y, 1 - y),
        "Intern": np.where(rng.uniform(size=n) < 0.7, y, 1 - y),
    }
    return y, s, reads


def test_evaluate_binary_end_to_end(tmp_path) -> None:
    y, s, reads = _data()
    cfg = EvaluateConfig(bootstrap=50)
    subsets = {
        "first half": np.arange(y.size) < 45,
        "rtpcr_negative": (y == 1) & (np.arange(y.size) % 3 == 0),
    }
    res = evaluate_binary(
        y, s, cfg, reads=reads, subsets=subsets, figures_dir=tmp_path / "fig", name="CNNCF"
    )
    assert res["threshold"] == 0.5
    assert res["indices"]["f1"].point == pytest.approx(f1_score(y, s >= 0.5))
    assert res["metrics"]["auroc_exact"] == pytest.approx(roc_auc_score(y, s))
    assert res["metrics"]["auroc"] == pytest.approx(roc_auc_score(y, s), abs=0.005)
    assert set(res["mcnemar"]) == set(reads) and set(res["readers"]) == set(reads)
    assert res["subsets"]["rtpcr_negative"]["n"] == int(subsets["rtpcr_negative"].sum())
    assert np.isnan(res["subsets"]["rtpcr_negative"]["specificity"])  # positives only
    assert [r["threshold"] for r in res["thresholds_table"]] == cfg.report_thresholds
    assert len(res["figures"]) == 5 and all(p.is_file() for p in res["figures"].values())
    flat = json.loads(write_metrics_json(res["metrics"], tmp_path / "metrics.json").read_text())
    assert flat["f1.point"] == pytest.approx(res["indices"]["f1"].point)
    assert "readers.Intern.kappa.low" in flat and "mcnemar_p.Rad-5th" in flat
    page = write_model_card(tmp_path / "card.html", model_name="CNNCF", **res["card"])
    assert len(re.findall(r"<img ", page.read_text())) == 5


def test_operating_threshold_rules() -> None:
    y, s, _ = _data()
    assert operating_threshold(EvaluateConfig(threshold_rule="fixed")) == 0.5
    thr = operating_threshold(
        EvaluateConfig(threshold_rule="sensitivity_floor", min_sensitivity=0.9), y, s
    )
    assert (s[y == 1] >= thr).mean() >= 0.9
    with pytest.raises(DataError):
        operating_threshold(EvaluateConfig(threshold_rule="youden"))


def test_default_operating_point_is_chosen_on_validation_data() -> None:
    """The default rule gives a usable operating point, not the fixed 0.5 (at which a model whose scores
    all lie above 0.5 calls everyone positive); a validation set without both classes falls back to the
    fixed threshold and says so."""
    from covidscan.evaluation.summary import operating_point

    cfg = EvaluateConfig()
    assert cfg.threshold_rule == "specificity_at_sensitivity" and cfg.min_sensitivity == 0.9
    y = np.array([0, 1] * 20)
    s = 0.55 + 0.4 * y + np.linspace(0, 0.03, y.size)  # perfect ranking, everything above 0.5
    point = operating_point(cfg, y, s)
    assert point.rule == "specificity_at_sensitivity" and point.n_val == 40 and point.note == ""
    calls = s >= point.threshold
    assert calls[y == 1].all() and not calls[y == 0].any()
    one_class = operating_point(cfg, np.ones(5, int), np.linspace(0.6, 0.9, 5))
    assert one_class.threshold == 0.5 and one_class.rule == "fixed" and "positive of 5" in one_class.note
    assert operating_point(EvaluateConfig(threshold_rule="fixed", threshold=0.3), y, s).threshold == 0.3
