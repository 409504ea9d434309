"""DBSCAN centres of planted blobs, box centres, matching and the agreement indices."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.errors import DataError
from covidscan.explain.centres import (
    agreement_over_cases,
    box_centres,
    box_centres_3d,
    centre_agreement,
    expert_centres,
    heatmap_centres,
    match_centres,
)


def _blob2d(shape, centre_rc, sigma):
    r, c = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((r - centre_rc[0]) ** 2 + (c - centre_rc[1]) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize(
    "shape,blobs",
    [
        ((64, 64), [(20, 40)]),
        ((64, 96), [(16, 20), (48, 70)]),
        ((100, 80), [(30, 20), (70, 60), (20, 65)]),
    ],
)
def test_dbscan_recovers_planted_2d_centres(shape, blobs) -> None:
    heat = np.zeros(shape)
    for k, (r, c) in enumerate(blobs):
        heat = np.maximum(heat, _blob2d(shape, (r, c), 3.0 + k))
    centres = heatmap_centres(heat, threshold=0.5)
    assert centres.shape == (len(blobs), 2)
    expected = np.array([[c / shape[1], r / shape[0]] for r, c in blobs])  # (x, y)
    pi, ei = match_centres(centres, expected)
    np.testing.assert_allclose(centres[pi], expected[ei], atol=0.01)


def test_largest_cluster_first_and_noise_ignored() -> None:
    heat = np.maximum(_blob2d((80, 80), (20, 20), 2.0), _blob2d((80, 80), (60, 60), 6.0))
    heat[5, 75] = 1.0  # a lone hot pixel is DBSCAN noise
    centres = heatmap_centres(heat, threshold=0.5)
    assert centres.shape == (2, 2)
    assert centres[0] == pytest.approx([60 / 80, 60 / 80], abs=0.01)
    assert heatmap_centres(heat, threshold=0.5, max_centres=1).shape == (1, 2)
    assert heatmap_centres(np.zeros((10, 10))).shape == (0, 2)


def test_dbscan_recovers_planted_3d_centre() -> None:
    z, r, c = np.mgrid[:20, :32, :40]
    heat = np.exp(-((z - 5) ** 2 + (r - 24) ** 2 + (c - 10) ** 2) / (2 * 2.5**2))
    centres = heatmap_centres(heat, threshold=0.5)
    assert centres.shape == (1, 3)
    assert centres[0] == pytest.approx([5 / 20, 24 / 32, 10 / 40], abs=0.01)  # (z, y, x)
    with pytest.raises(DataError):
        heatmap_centres(np.zeros(5))


def test_box_centres() -> None:
    boxes = [[10, 20, 30, 60], [0, 0, 100, 50]]
    np.testing.assert_allclose(
        box_centres(boxes, (100, 200)), [[20 / 200, 40 / 100], [50 / 200, 25 / 100]]
    )
    np.testing.assert_allclose(
        box_centres_3d([[10, 20, 30, 60]], [4], (8, 100, 200)), [[0.5, 0.4, 0.1]]
    )


def test_matching_hungarian_and_nearest() -> None:
    pred = np.array([[0.9, 0.9], [0.1, 0.1], [0.5, 0.5]])
    exp = np.array([[0.12, 0.1], [0.88, 0.92]])
    pi, ei = match_centres(pred, exp)
    assert sorted(zip(pi.tolist(), ei.tolist(), strict=True)) == [(0, 1), (1, 0)]
    pi, ei = match_centres(pred[:1], exp, method="nearest")  # one predicted centre reused
    assert pi.tolist() == [0, 0] and ei.tolist() == [0, 1]
    assert match_centres(np.zeros((0, 2)), exp)[0].size == 0


def test_centre_agreement_known_values() -> None:
    exp = np.array([[0.2, 0.3], [0.6, 0.7]])
    pred = exp + np.array([[0.1, -0.1], [0.1, 0.1]])
    got = centre_agreement(pred, exp)
    assert got["mse"] == pytest.approx(0.01) and got["mae"] == pytest.approx(0.1)
    assert got["rmse"] == pytest.approx(0.1)
    ss_tot = np.sum((exp.ravel() - exp.mean()) ** 2)
    assert got["r2"] == pytest.approx(1 - 0.04 / ss_tot)
    assert got["r"] == pytest.approx(np.corrcoef(exp.ravel(), pred.ravel())[0, 1])


def test_agreement_over_cases_from_heatmaps() -> None:
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(6):
        r, c = rng.integers(12, 52, 2)
        heat = _blob2d((64, 64), (r, c), 3.0)
        box = [[c - 5, r - 5, c + 5, r + 5]]
        cases.append((heatmap_centres(heat), box_centres(box, (64, 64))))
    cases.append((np.zeros((0, 2)), box_centres([[1, 1, 5, 5]], (64, 64))))  # nothing found
    got = agreement_over_cases(cases)
    assert got["n_matched"] == 6 and got["n_unmatched_expert"] == 1
    assert got["mse"] < 1e-4 and got["r"] > 0.99


def test_expert_box_slices_map_like_the_volume_preprocessing():
    """Fast: expert_centres puts a box's slice where ct_volume puts that slice (preprocess.ct.volume_slice_index)."""
    import pandas as pd

    from covidscan.config import PreprocessConfig
    from covidscan.preprocess.ct import volume_slice_index

    pre = PreprocessConfig(volume_slices=8, volume_size=32)
    row = pd.Series({"rows": 64, "cols": 64, "n_slices": 12, "spacing_slice": 2.5})
    boxes = pd.DataFrame({"slice_index": [2, 8], "x0": [0, 32], "y0": [0, 16], "x1": [32, 64], "y1": [16, 48]})
    centres = expert_centres(row, boxes, 3, pre)
    np.testing.assert_allclose(centres[:, 0] * 8, volume_slice_index(np.array([2.0, 8.0]), 12, 2.5, pre))
    np.testing.assert_allclose(centres[:, 0] * 8, [2 * 6 / 11, 8 * 6 / 11])  # 27.5 mm -> 7 slices at 5 mm, padded 0 before
    np.testing.assert_allclose(centres[:, 1:], [[0.125, 0.25], [0.5, 0.75]])
