"""Model card HTML and DVC-readable metrics/plots files."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from covidscan import RESEARCH_NOTICE
from covidscan.evaluation.bootstrap import bootstrap_binary_indices
from covidscan.evaluation.curves import auroc, grid_curve, thresholds_table
from covidscan.evaluation.readers import compare_with_readers, reader_points
from covidscan.evaluation.report import (
    flatten_metrics,
    write_curve_csv,
    write_curve_json,
    write_metrics_json,
    write_model_card,
)
from covidscan.visualize import plot_boxplots, plot_pr, plot_roc


def _data(n: int = 80):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    return y, s


def test_metrics_json_is_flat_and_strict(tmp_path) -> None:
    metrics = {
        "test": {"f1": np.float64(0.9), "n": np.int64(40), "kappa": float("nan")},
        "auroc": 0.95,
        "significant": np.bool_(True),
    }
    path = write_metrics_json(metrics, tmp_path / "metrics.json")
    data = json.loads(path.read_text())  # strict JSON: no NaN literal
    assert data == {
        "test.f1": 0.9,
        "test.n": 40,
        "test.kappa": None,
        "auroc": 0.95,
        "significant": True,
    }
    assert "NaN" not in path.read_text()
    assert flatten_metrics({"a": {"b": {"c": 1}}}) == {"a.b.c": 1}


def test_curve_files(tmp_path) -> None:
    y, s = _data()
    curve = grid_curve(y, s)
    roc = write_curve_csv(curve, "roc", tmp_path / "roc.csv")
    rows = list(csv.DictReader(roc.open()))
    assert list(rows[0]) == ["fpr", "tpr", "threshold"] and len(rows) == 203
    fpr = np.array([float(r["fpr"]) for r in rows])
    tpr = np.array([float(r["tpr"]) for r in rows])
    assert np.all(np.diff(fpr) >= 0) and np.trapezoid(tpr, fpr) == pytest.approx(auroc(curve))
    pr = write_curve_csv(curve, "pr", tmp_path / "pr.csv")
    assert list(next(csv.DictReader(pr.open()))) == ["recall", "precision", "threshold"]
    both = json.loads(
        write_curve_json(
            {"roc": (curve, "roc"), "prc": (curve, "pr")}, tmp_path / "c.json"
        ).read_text()
    )
    assert set(both) == {"roc", "prc"} and {"fpr", "tpr"} <= set(both["roc"][0])
    with pytest.raises(ValueError):
        write_curve_csv(curve, "det", tmp_path / "x.csv")


def _figures(tmp_path: Path):
    y, s = _data()
    pred = (s >= 0.5).astype(int)
    reads = {"Rad-5th": np.where(np.random.default_rng(1).uniform(size=y.size) < 0.85, y, 1 - y)}
    curve = grid_curve(y, s)
    pts = reader_points(y, reads)
    figs = tmp_path / "figures"
    model = bootstrap_binary_indices(y, pred, n_resamples=50, seed=0)
    reader = bootstrap_binary_indices(y, reads["Rad-5th"], n_resamples=50, seed=0)
    figures = {
        "ROC": plot_roc({"model": curve}, figs / "roc.png", readers=pts),
        "Precision-recall with iso-F1 lines": plot_pr(
            {"model": curve}, figs / "pr.png", readers=pts
        ),
        "Bootstrap boxplots": plot_boxplots({"model": model, "Rad-5th": reader}, figs / "box.png"),
    }
    metrics = {
        "model": {k: v.as_dict() for k, v in model.items()},
        "Rad-5th": {k: v.as_dict() for k, v in reader.items()},
    }
    tables = {
        "Thresholds": thresholds_table(y, s, [0.3, 0.5, 0.7]),
        "McNemar": [
            {"reader": k, **v.as_dict()} for k, v in compare_with_readers(y, pred, reads).items()
        ],
    }
    return figures, metrics, tables


def test_model_card_references_every_figure(tmp_path) -> None:
    figures, metrics, tables = _figures(tmp_path)
    shortcut = [
        {
            "features": "histogram",
            "target": "source",
            "auroc": 0.99,
            "n": 80,
            "n_groups": 2,
            "note": "",
        }
    ]
    page = write_model_card(
        tmp_path / "card" / "model_card.html",
        model_name="cnncf <student>",
        data_summary={"test cases": 80, "sources": "rsna, ccd"},
        metrics=metrics,
        figures=figures,
        tables=tables,
        shortcut=shortcut,
        extra={"run": "abc"},
    )
    text = page.read_text()
    assert text.count(RESEARCH_NOTICE) == 2
    assert "Research only" in text and "Limitations" in text and "Source-shortcut probe" in text
    assert "cnncf &lt;student&gt;" in text and "<student>" not in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == len(figures)
    for src in srcs:
        assert (page.parent / src).resolve().is_file()
    assert {(page.parent / s).resolve() for s in srcs} == {
        Path(p).resolve() for p in figures.values()
    }
    for caption in figures:
        assert caption in text
    assert "0.9900" in text and "McNemar" in text and "95% CI" in text


def test_model_card_embedded_and_missing_figure(tmp_path) -> None:
    figures, metrics, _ = _figures(tmp_path)
    page = write_model_card(
        tmp_path / "card.html", model_name="m", metrics=metrics, figures=figures, embed_figures=True
    )
    srcs = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,iVBOR") for s in srcs)
    with pytest.raises(FileNotFoundError):
        write_model_card(
            tmp_path / "x.html", model_name="m", figures={"gone": tmp_path / "gone.png"}
        )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_metrics_show_reads_the_file(tmp_path) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("dvc not installed next to the interpreter")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(dvc), "init", "-q"], cwd=tmp_path, check=True, env=env)
    write_metrics_json({"test": {"f1": 0.9672, "kappa": 0.954}}, tmp_path / "metrics.json")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics.json\n")
    out = subprocess.run(
        [str(dvc), "metrics", "show", "--json"],
        cwd=tmp_path,
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert "0.9672" in out and "test.f1" in out
