"""Source-shortcut probe: a planted source signature is found, no signature gives about chance."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.errors import DataError
from covidscan.explain.shortcut import (
    histogram_features,
    pixel_features,
    shortcut_table,
    source_predictability,
)


def _images(n_per_source: int, offsets: list[float], seed: int = 0):
    rng = np.random.default_rng(seed)
    images, sources = [], []
    for k, off in enumerate(offsets):
        for _ in range(n_per_source):
            img = rng.uniform(0.2, 0.8, (32, 32)).astype(np.float32) + off
            images.append(img)
            sources.append(f"source{k}")
    return images, np.array(sources)


@pytest.mark.parametrize(
    "kwargs,shape_in,expected",
    [
        ({"size": 16}, (40, 30), (3, 256)),
        ({"size": 8}, (5, 40, 30), (3, 64)),
        ({"size": 4}, (40, 30, 3), (3, 16)),
    ],
)
def test_pixel_feature_shapes(kwargs, shape_in, expected) -> None:
    imgs = [np.ones(shape_in, dtype=np.float32)] * 3
    assert pixel_features(imgs, **kwargs).shape == expected


def test_histogram_rows_sum_to_one() -> None:
    imgs, _ = _images(3, [0.0, 0.5])
    h = histogram_features(imgs, bins=16)
    assert h.shape == (6, 16)
    np.testing.assert_allclose(h.sum(1), 1.0)


def test_planted_source_signature_is_found() -> None:
    imgs, src = _images(20, [0.0, 0.15, 0.3])
    res = source_predictability(histogram_features(imgs), src, n_splits=5)
    assert res["auroc"] > 0.95 and res["n_groups"] == 3 and res["n"] == 60


def test_no_signature_gives_about_chance() -> None:
    imgs, src = _images(25, [0.0, 0.0])
    res = source_predictability(pixel_features(imgs, size=8), src)
    assert 0.25 < res["auroc"] < 0.75


def test_table_with_model_features_and_disease_row() -> None:
    rng = np.random.default_rng(1)
    imgs, src = _images(12, [0.0, 0.2])
    model_feats = rng.normal(size=(24, 10)) + (src == "source1")[:, None] * 2.0
    rows = shortcut_table(
        {"pixels": pixel_features(imgs, size=8), "model": model_feats},
        {"source": src, "centre": np.array(["one"] * 24)},
        disease_auroc=0.97,
        disease_n=24,
        n_splits=3,
    )
    assert len(rows) == 5
    by = {(r["features"], r["target"]): r for r in rows}
    assert by[("model", "source")]["auroc"] > 0.9
    assert np.isnan(by[("pixels", "centre")]["auroc"]) and "two" in by[("pixels", "centre")]["note"]
    assert rows[-1]["target"] == "disease" and rows[-1]["auroc"] == 0.97


def test_probe_rejects_unusable_groups() -> None:
    with pytest.raises(DataError):
        source_predictability(np.zeros((4, 2)), ["a", "a", "a", "b"])
    with pytest.raises(DataError):
        source_predictability(np.zeros((4, 2)), ["a", "b"])
