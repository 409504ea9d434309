"""Known-answer tests of the classification indices against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from covidscan.errors import DataError
from covidscan.evaluation.metrics import (
    binarize,
    binary_indices,
    confusion_counts,
    indices_at_threshold,
    indices_from_counts,
    multiclass_indices,
)


def _random_binary(seed: int, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scores = np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)
    return y, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.71])
def test_binary_indices_equal_sklearn(seed: int, threshold: float) -> None:
    y, scores = _random_binary(seed)
    pred = (scores >= threshold).astype(int)
    got = indices_at_threshold(y, scores, threshold)
    assert got["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert got["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert got["precision"] == pytest.approx(precision_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (tp, fp, tn, fn)
    assert got["n"] == y.size and got["threshold"] == threshold


def test_threshold_is_inclusive() -> None:
    assert binarize([0.49, 0.5, 0.51], 0.5).tolist() == [False, True, True]


def test_empty_denominators_are_nan() -> None:
    # no positive case and nothing called positive
    got = binary_indices([0, 0, 0], [0, 0, 0])
    assert np.isnan(got["sensitivity"]) and np.isnan(got["precision"]) and np.isnan(got["f1"])
    assert np.isnan(got["kappa"])  # both raters constant on the same class: p_e = 1
    assert got["specificity"] == 1.0 and got["accuracy"] == 1.0
    # positives exist but none is found: F1 is 0, precision undefined
    got = binary_indices([1, 1, 0], [0, 0, 0])
    assert got["sensitivity"] == 0.0 and got["f1"] == 0.0 and np.isnan(got["precision"])
    # no negative case
    assert np.isnan(binary_indices([1, 1], [1, 0])["specificity"])


def test_batched_counts_match_one_by_one() -> None:
    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, (7, 40))
    p = rng.integers(0, 2, (7, 40))
    batch = indices_from_counts(confusion_counts(t, p))
    for b in range(7):
        single = binary_indices(t[b], p[b])
        for k, v in batch.items():
            assert v[b] == pytest.approx(single[k], nan_ok=True)


def test_non_binary_labels_are_rejected() -> None:
    with pytest.raises(DataError):
        binary_indices([0, 2, 1], [0, 1, 1])
    with pytest.raises(DataError):
        binary_indices([0, 1, 1], [0, 1])


def test_multiclass_one_vs_rest_and_macro_equal_sklearn() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 120)
    pred = np.where(rng.uniform(size=120) < 0.7, y, rng.integers(0, 3, 120))
    names = ["normal", "pneumonia", "covid19"]
    got = multiclass_indices(y, pred, names)
    recalls = recall_score(y, pred, average=None)
    precisions = precision_score(y, pred, average=None)
    f1s = f1_score(y, pred, average=None)
    for k, name in enumerate(names):
        assert got[name]["sensitivity"] == pytest.approx(recalls[k])
        assert got[name]["precision"] == pytest.approx(precisions[k])
        assert got[name]["f1"] == pytest.approx(f1s[k])
        assert got[name]["kappa"] == pytest.approx(cohen_kappa_score(y == k, pred == k))
        assert got[name]["specificity"] == pytest.approx(recall_score(y != k, pred != k))
    assert got["macro"]["sensitivity"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert got["macro"]["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert got["macro"]["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert got["overall"]["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert got["overall"]["accuracy"] == pytest.approx(accuracy_score(y, pred))


def test_multiclass_macro_skips_undefined_classes() -> None:
    # class 2 never occurs and is never predicted: its sensitivity/precision are NaN, not 0
    got = multiclass_indices([0, 1, 0, 1], [0, 1, 1, 1], ["a", "b", "c"])
    assert np.isnan(got["c"]["sensitivity"])
    assert got["macro"]["sensitivity"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(DataError):
        multiclass_indices([0, 3], [0, 1], ["a", "b", "c"])
