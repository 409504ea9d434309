"""ROC/PR on the 0.005 grid against scikit-learn, calibration, threshold choice and the plots."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from covidscan.errors import DataError
from covidscan.evaluation.curves import (
    auprc,
    auprc_exact,
    auroc,
    auroc_exact,
    choose_threshold,
    grid_curve,
    iso_f1_curve,
    pr_auc_trapezoid,
    reliability,
    threshold_grid,
    thresholds_table,
)
from covidscan.visualize import plot_pr, plot_reliability, plot_roc
from covidscan.evaluation.metrics import indices_at_threshold


def _scores(seed: int, n: int = 300, sep: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.5 + sep * (y - 0.5) * 2, 0.2), 0, 1)
    return y, s


def test_threshold_grid_has_201_points() -> None:
    g = threshold_grid(0.005)
    assert g.size == 201 and g[0] == 0.0 and g[-1] == 1.0
    assert np.allclose(np.diff(g), 0.005)
    with pytest.raises(DataError):
        threshold_grid(0.003)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_grid_counts_equal_brute_force(seed: int) -> None:
    y, s = _scores(seed, n=80)
    curve = grid_curve(y, s, 0.005)
    for i in (0, 37, 100, 150, 200):
        ind = indices_at_threshold(y, s, curve.thresholds[i])
        assert curve.tp[i] == ind["tp"] and curve.fp[i] == ind["fp"]
        assert curve.tpr[i] == pytest.approx(ind["sensitivity"])
        assert 1 - curve.fpr[i] == pytest.approx(ind["specificity"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auroc_grid_within_tolerance_of_sklearn(seed: int) -> None:
    y, s = _scores(seed)
    curve = grid_curve(y, s)
    assert auroc(curve) == pytest.approx(roc_auc_score(y, s), abs=0.005)
    assert auroc_exact(y, s) == pytest.approx(roc_auc_score(y, s))


def test_auroc_grid_exact_when_scores_lie_on_the_grid() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 200)
    s = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1) / 0.005) * 0.005  # k * 0.005
    assert auroc(grid_curve(y, s)) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auprc_grid_within_tolerance_of_sklearn(seed: int) -> None:
    y, s = _scores(seed)
    curve = grid_curve(y, s)
    assert auprc(curve) == pytest.approx(average_precision_score(y, s), abs=0.01)
    p, r, _ = precision_recall_curve(y, s)
    assert pr_auc_trapezoid(curve) == pytest.approx(auc(r, p), abs=0.01)
    assert auprc_exact(y, s) == pytest.approx(average_precision_score(y, s))


def test_auprc_exact_when_scores_lie_on_the_grid() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 150)
    s = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 150), 0, 1) * 200) / 200
    assert auprc(grid_curve(y, s)) == pytest.approx(average_precision_score(y, s), abs=1e-9)


def test_perfect_and_single_class() -> None:
    y = np.array([0, 0, 1, 1])
    curve = grid_curve(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert auroc(curve) == 1.0 and auprc(curve) == 1.0
    assert np.isnan(auroc_exact(np.ones(4, int), np.linspace(0, 1, 4)))
    with pytest.raises(DataError):
        auroc(grid_curve(np.ones(4, int), np.linspace(0, 1, 4)))


@pytest.mark.parametrize("f1", [0.2, 0.5, 0.8])
def test_iso_f1_points_have_that_f1(f1: float) -> None:
    r, p = iso_f1_curve(f1)
    assert np.allclose(2 * p * r / (p + r), f1)
    assert r[-1] == 1.0


def test_thresholds_table_includes_half() -> None:
    y, s = _scores(0)
    rows = thresholds_table(y, s, [0.3, 0.5, 0.7])
    assert [r["threshold"] for r in rows] == [0.3, 0.5, 0.7]
    sens = [r["sensitivity"] for r in rows]
    spec = [r["specificity"] for r in rows]
    assert sens == sorted(sens, reverse=True) and spec == sorted(spec)
    assert rows[1] == indices_at_threshold(y, s, 0.5)


def test_reliability_and_ece_by_hand() -> None:
    y = np.array([0, 1, 1, 1, 0, 0])
    s = np.array([0.05, 0.05, 0.95, 0.95, 0.95, 1.0])
    rel = reliability(y, s, n_bins=10)
    assert rel.counts.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 4]
    assert rel.frequency[0] == pytest.approx(0.5) and rel.confidence[0] == pytest.approx(0.05)
    assert rel.frequency[9] == pytest.approx(0.5) and rel.confidence[9] == pytest.approx(0.9625)
    assert np.isnan(rel.frequency[4])
    assert rel.ece == pytest.approx(2 / 6 * 0.45 + 4 / 6 * 0.4625)


def test_perfectly_calibrated_scores_have_small_ece() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(size=20000)
    y = (rng.uniform(size=s.size) < s).astype(int)
    assert reliability(y, s).ece < 0.02
    assert reliability(y, np.clip(s + 0.3, 0, 1)).ece > 0.2


def test_youden_threshold_separates_a_clean_split() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    thr = choose_threshold(y, s, rule="youden")
    assert 0.3 < thr <= 0.6
    assert thr == pytest.approx(0.6)  # ties go to the highest threshold
    ind = indices_at_threshold(y, s, thr)
    assert ind["sensitivity"] == 1.0 and ind["specificity"] == 1.0


def test_sensitivity_floor_is_highest_threshold_meeting_it() -> None:
    y, s = _scores(1)
    thr = choose_threshold(y, s, rule="sensitivity_floor", min_sensitivity=0.9)
    assert indices_at_threshold(y, s, thr)["sensitivity"] >= 0.9
    assert indices_at_threshold(y, s, thr + 0.005)["sensitivity"] < 0.9
    with pytest.raises(DataError):
        choose_threshold(np.zeros(5, int), np.linspace(0, 1, 5))
    with pytest.raises(ValueError):
        choose_threshold(y, s, rule="magic")


def test_specificity_at_sensitivity_is_the_default_and_takes_the_middle_of_a_tie() -> None:
    # the demo's champion: a perfect ranking with every score above 0.5 (at 0.5: sensitivity 1, specificity 0)
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.60, 0.62, 0.70, 0.80, 0.85, 0.90])
    thr = choose_threshold(y, s)  # the default rule
    ind = indices_at_threshold(y, s, thr)
    assert ind["sensitivity"] == 1.0 and ind["specificity"] == 1.0
    assert thr == pytest.approx(0.75)  # grid 0.705 .. 0.800 all separate the classes: the middle one, not an edge
    # the fixed 0.5 of the papers calls every negative positive
    assert indices_at_threshold(y, s, 0.5)["specificity"] == 0.0


def test_specificity_at_sensitivity_maximises_specificity_above_the_floor() -> None:
    y, s = _scores(1)
    thr = choose_threshold(y, s, rule="specificity_at_sensitivity", min_sensitivity=0.9)
    grid = threshold_grid(0.005)
    sens = np.array([indices_at_threshold(y, s, t)["sensitivity"] for t in grid])
    spec = np.array([indices_at_threshold(y, s, t)["specificity"] for t in grid])
    best = spec[sens >= 0.9].max()
    ind = indices_at_threshold(y, s, thr)
    assert ind["sensitivity"] >= 0.9 and ind["specificity"] == pytest.approx(best)
    ties = grid[(sens >= 0.9) & np.isclose(spec, best)]
    assert thr == pytest.approx(ties[(len(ties) - 1) // 2])


def test_plots_are_written(tmp_path) -> None:
    y, s = _scores(2)
    curve = grid_curve(y, s)
    readers = {"Rad-5th": {"sensitivity": 0.8, "specificity": 0.9, "precision": 0.85}}
    for path in (
        plot_roc({"model": curve}, tmp_path / "roc.png", readers=readers),
        plot_pr({"model": curve}, tmp_path / "pr.png", readers=readers),
        plot_reliability(reliability(y, s), tmp_path / "rel.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multiclass_auroc_equals_sklearn_ovr_macro() -> None:
    from covidscan.evaluation.curves import multiclass_auroc

    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = multiclass_auroc(y, probs, ["normal", "pneumonia", "covid19"])
    assert got["macro"]["auroc_exact"] == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert got["macro"]["auroc"] == pytest.approx(got["macro"]["auroc_exact"], abs=0.005)
    assert got["covid19"]["auprc_exact"] == pytest.approx(
        average_precision_score(y == 2, probs[:, 2])
    )
    absent = multiclass_auroc(np.zeros(4, int), np.full((4, 2), 0.5), ["a", "b"])
    assert np.isnan(absent["a"]["auroc"]) and np.isnan(absent["macro"]["auroc"])


def test_a_reader_keeps_one_colour_in_every_figure() -> None:
    """ROC, ROC with CI and PR draw each reader in the same colour (whatever the readers' order), never
    in the model's colour."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from covidscan.evaluation.bootstrap import roc_with_ci
    from covidscan.visualize import pr_figure, reader_colours, roc_band_figure, roc_figure

    y, s = _scores(3)
    curve = grid_curve(y, s)
    readers = {
        name: {"sensitivity": sens, "specificity": spec, "precision": prec}
        for name, sens, spec, prec in [("Respira.", 0.8, 0.9, 0.85), ("Emerg.", 0.7, 0.8, 0.75), ("Intern", 0.6, 0.7, 0.65)]
    }
    reversed_readers = dict(reversed(readers.items()))
    figures = {
        "roc": roc_figure({"CNNCF": curve}, readers),
        "roc_ci": roc_band_figure(roc_with_ci(y, s, n_resamples=50, seed=0), reversed_readers, label="CNNCF"),
        "pr": pr_figure({"CNNCF": curve}, reversed_readers),
    }
    colours = {}
    for key, fig in figures.items():
        lines = {line.get_label(): to_hex(line.get_color()) for line in fig.axes[0].get_lines()}
        colours[key] = {name: lines[name] for name in readers}
        model = next(c for label, c in lines.items() if label.startswith("CNNCF"))
        assert model not in colours[key].values(), (key, model, colours[key])
        assert len(set(colours[key].values())) == len(readers), colours[key]
        plt.close(fig)
    assert colours["roc"] == colours["roc_ci"] == colours["pr"]
    assert colours["roc"] == {name: to_hex(c) for name, c in reader_colours(readers).items()}
