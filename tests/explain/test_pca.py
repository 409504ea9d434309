"""PCA eigen-images and the preprocessing figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.explain.pca import eigen_images, grey_image, pca_by_class, pca_figures
from covidscan.preprocess.cache import preprocess_manifest
from covidscan.visualize import plot_dimension_normalisation, plot_eigen_images, plot_pseudo_colour_examples

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _blobs(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """n images: a bright disc whose position and brightness vary (two real modes of variation)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cx = size / 2 + rng.normal(0, 2)
        out.append(100 + rng.uniform(50, 150) * (((yy - size / 2) ** 2 + (xx - cx) ** 2) < (size / 4) ** 2) + rng.normal(0, 2, (size, size)))
    return np.stack(out).astype(np.float32)


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 2000 and path.read_bytes()[:8] == PNG_MAGIC


def test_eigen_images_are_orthonormal_and_mean_is_the_mean():
    imgs = _blobs(30)
    res = eigen_images(imgs, n_components=5, seed=0)
    assert res.mean.shape == (16, 16) and res.components.shape == (5, 16, 16) and res.n_images == 30
    np.testing.assert_allclose(res.mean, imgs.mean(axis=0), rtol=1e-5, atol=1e-3)
    flat = res.components.reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(flat @ flat.T, np.eye(5), atol=1e-4)
    evr = res.explained_variance_ratio
    assert np.all(np.diff(evr) <= 1e-12) and 0 < evr.sum() <= 1
    # the first component captures the dominant mode (disc brightness / position), well above noise
    assert evr[0] > 0.2


def test_eigen_images_deterministic_and_capped_by_rank():
    imgs = _blobs(4)
    a, b = eigen_images(imgs, 5, seed=3), eigen_images(imgs, 5, seed=3)
    np.testing.assert_array_equal(a.components, b.components)
    assert a.components.shape[0] == 3  # 4 centred images have rank 3
    with pytest.raises(DataError, match="at least 2"):
        eigen_images(imgs[:1])
    with pytest.raises(DataError):
        eigen_images(imgs[0])


def test_plot_eigen_images_writes_png(tmp_path):
    results = {"normal": eigen_images(_blobs(10, seed=1)), "covid19": eigen_images(_blobs(3, seed=2))}
    path = plot_eigen_images(results, tmp_path / "figs" / "pca.png", "test")
    assert _is_png(path)
    with pytest.raises(DataError):
        plot_eigen_images({}, tmp_path / "empty.png")


def test_pseudo_colour_and_dimension_normalisation_figures(tmp_path):
    grey = np.clip(_blobs(1, 48)[0], 0, 255).astype(np.uint8)
    p1 = plot_pseudo_colour_examples({"X-ray": grey, "CT slice": grey[::-1]}, tmp_path / "fig1a.png", ("jet", "bone"))
    assert _is_png(p1)
    stack = np.clip(_blobs(12, 32), 0, 255).astype(np.uint8)
    p2 = plot_dimension_normalisation(stack, tmp_path / "fig1b.png")
    assert _is_png(p2)
    with pytest.raises(DataError):
        plot_dimension_normalisation(stack[:10], tmp_path / "bad.png")  # 10 slices do not split into 3
    with pytest.raises(DataError):
        plot_pseudo_colour_examples({"x": stack[0].astype(np.float32)}, tmp_path / "bad.png")


def test_pca_from_preprocessed_index(tmp_path):
    """End to end: tiny ingest arrays -> preprocess_manifest -> PCA per (modality, class) -> figures."""
    ingest = tmp_path / "ingest"
    (ingest / "a").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(8):
        label = ("normal", "covid19")[i % 2]
        xr = _blobs(1, 40, seed=i)[0]
        np.save(ingest / f"a/x{i}.npy", xr)
        rows.append({"record_id": f"x{i}", "modality": "xray", "kind": "xray", "label": label, "array_path": f"a/x{i}.npy", "spacing_slice": np.nan})
        hu = (rng.normal(-700, 200, (6, 24, 24))).astype(np.int16)
        np.save(ingest / f"a/c{i}.npy", hu)
        rows.append({"record_id": f"c{i}", "modality": "ct", "kind": "ct_volume", "label": label, "array_path": f"a/c{i}.npy", "spacing_slice": 5.0})
    cfg = PreprocessConfig(xray_size=32, ct_size=20, ct_slices=6, volume_size=16, volume_slices=4)
    index = preprocess_manifest(pd.DataFrame(rows), ingest, cfg, tmp_path / "processed", cache_dir=tmp_path / "cache", progress=False)
    res = pca_by_class(index, tmp_path / "processed", "ct", size=16, ct_reduce="mean", n_components=2)
    assert list(res) == ["normal", "covid19"]  # canonical class order
    assert res["normal"].components.shape == (2, 16, 16) and res["normal"].n_images == 4
    ct_row = index[index.record_id == "c0"].iloc[0]
    middle = grey_image(ct_row, tmp_path / "processed", 20, "middle")
    stack = np.load(tmp_path / "processed" / ct_row["image_path"])
    np.testing.assert_array_equal(middle, stack[3].astype(np.float32))
    paths = pca_figures(index, tmp_path / "processed", tmp_path / "figs", size=16)
    assert sorted(p.name for p in paths) == ["pca_ct.png", "pca_xray.png"]
    assert all(_is_png(p) for p in paths)
    few = pca_by_class(index[index.modality == "xray"].iloc[:3], tmp_path / "processed", "xray", size=16)
    assert list(few) == ["normal"]  # covid19 has one image there: left out
