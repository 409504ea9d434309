"""Fixtures for preprocessing tests: small ellipse phantoms and an ingest-like folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def xray_phantom(rows: int = 96, cols: int = 80, seed: int = 0) -> np.ndarray:
    """float32 (rows, cols), bright = dense: body, dark lungs, bright spine, noise."""
    rng = np.random.default_rng(seed)
    img = np.full((rows, cols), 100.0, np.float32)
    img[ellipse((rows, cols), rows / 2, cols / 2, rows * 0.45, cols * 0.45)] = 900.0
    for side in (-1, 1):
        img[ellipse((rows, cols), rows * 0.48, cols / 2 + side * cols * 0.2, rows * 0.3, cols * 0.13)] = 300.0
    img[:, int(cols * 0.47) : int(cols * 0.53)] += 800.0
    return img + rng.normal(0, 10, img.shape).astype(np.float32)


def ct_phantom(z: int = 12, size: int = 40, seed: int = 0) -> np.ndarray:
    """int16 HU (z, size, size): air, soft-tissue body, two lungs that shrink towards the ends, spine."""
    rng = np.random.default_rng(seed)
    vol = np.full((z, size, size), -1000, np.int16)
    for k in range(z):
        t = 1.0 - abs((k - (z - 1) / 2) / ((z - 1) / 2 + 1e-9)) * 0.6
        sl = vol[k]
        sl[ellipse((size, size), size / 2, size / 2, size * 0.4, size * 0.47)] = 40
        for side in (-1, 1):
            sl[ellipse((size, size), size * 0.48, size / 2 + side * size * 0.22, size * 0.28 * t, size * 0.15 * t)] = -850
        sl[ellipse((size, size), size * 0.8, size / 2, size * 0.06, size * 0.06)] = 700
    return (vol + rng.normal(0, 5, vol.shape)).astype(np.int16)


@pytest.fixture
def ingest_dir(tmp_path: Path) -> Path:
    """A tiny ingest output: 2 X-rays, 1 2D CT slice, 2 CT volumes, annotations from 3 readers."""
    root = tmp_path / "ingest"
    (root / "arrays").mkdir(parents=True)
    arrays = {
        "x1": ("xray", "xray", "covid19", xray_phantom(96, 80, seed=1), np.nan),
        "x2": ("xray", "xray", "normal", xray_phantom(70, 90, seed=2), np.nan),
        "s1": ("ct", "ct_slice2d", "covid19", xray_phantom(50, 50, seed=3), np.nan),
        "c1": ("ct", "ct_volume", "covid19", ct_phantom(12, 40, seed=4), 2.5),
        "c2": ("ct", "ct_volume", "normal", ct_phantom(7, 36, seed=5), 5.0),
    }
    rows = []
    for rid, (modality, kind, label, arr, spacing) in arrays.items():
        rel = f"arrays/{rid}.npy"
        np.save(root / rel, arr)
        rows.append(
            {
                "record_id": rid,
                "patient_id": "p-" + hashlib.sha256(rid.encode()).hexdigest()[:16],
                "modality": modality,
                "kind": kind,
                "label": label,
                "array_path": rel,
                "rows": arr.shape[-2],
                "cols": arr.shape[-1],
                "n_slices": arr.shape[0] if arr.ndim == 3 else 1,
                "spacing_slice": spacing,
                "content_sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
            }
        )
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet", index=False)
    ann = [
        ("x1", "reader1", 0, 10, 20, 30, 40),
        ("x1", "adjudicated", 0, 10, 20, 30, 40),
        ("x1", "adjudicated", 0, 50, 30, 66, 46),
        ("c1", "adjudicated", 3, 5, 5, 20, 20),
        ("c1", "adjudicated", 8, 15, 10, 35, 25),
        ("c1", "reader2", 8, 14, 10, 35, 25),
        ("s1", "reader1", 0, 1, 1, 9, 9),
    ]
    pd.DataFrame(ann, columns=["record_id", "reader", "slice_index", "x0", "y0", "x1", "y1"]).to_parquet(root / "annotations.parquet", index=False)
    return root


@pytest.fixture
def make_xray():
    """Factory: xray_phantom(rows, cols, seed)."""
    return xray_phantom


@pytest.fixture
def make_ct():
    """Factory: ct_phantom(z, size, seed)."""
    return ct_phantom
