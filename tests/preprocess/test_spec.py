"""Input specs: shapes per kind and the array -> tensor step."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.preprocess.spec import INPUT_KINDS, input_spec

CFG = PreprocessConfig(xray_size=32, ct_size=24, ct_slices=9, volume_size=16, volume_slices=6, crop_size=8)


@pytest.mark.parametrize(
    "kind, stored, model_shape, dtype",
    [
        ("xray", (3, 32, 32), (3, 32, 32), "uint8"),
        ("ct_slice2d", (3, 24, 24), (3, 24, 24), "uint8"),
        ("ct_stack", (9, 24, 24), (9, 24, 24), "uint8"),
        ("ct_volume", (6, 16, 16), (1, 6, 16, 16), "float16"),
        ("lesion_crop", (3, 8, 8), (3, 8, 8), "uint8"),
    ],
)
def test_spec_shapes(kind, stored, model_shape, dtype):
    spec = input_spec(kind, CFG)
    assert (spec.stored_shape, spec.shape, spec.dtype) == (stored, model_shape, dtype)
    arr = np.full(stored, 255 if dtype == "uint8" else 1.0, dtype=dtype)
    spec.check(arr)
    t = spec.to_tensor(arr)
    assert tuple(t.shape) == model_shape and str(t.dtype) == "torch.float32" and float(t.max()) == 1.0
    batch = spec.to_tensor(np.stack([arr, arr]))
    assert tuple(batch.shape) == (2, *model_shape)


def test_spec_check_and_unknown_kind():
    with pytest.raises(DataError, match="expected xray uint8"):
        input_spec("xray", CFG).check(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(DataError, match="unknown input kind"):
        input_spec("pet", CFG)
    assert set(INPUT_KINDS) == {"xray", "ct_slice2d", "ct_stack", "ct_volume", "lesion_crop"}


def test_spec_records_colormap_and_groups():
    assert input_spec("xray", CFG.model_copy(update={"colormap": "bone"})).colormap == "bone"
    assert input_spec("ct_stack", CFG).channel_groups == 3
    assert input_spec("ct_stack", CFG).colormap is None


@pytest.mark.parametrize("intensity", ["none", "clahe"])
def test_model_inputs_match_what_preprocess_manifest_stores(ingest_dir, tmp_path, intensity):
    """Serving's entry point and the training cache give the same arrays, with the intensity lever on too."""
    import pandas as pd

    from covidscan.preprocess import model_inputs
    from covidscan.preprocess.cache import preprocess_manifest

    cfg = CFG.model_copy(update={"intensity": intensity})
    manifest = pd.read_parquet(ingest_dir / "manifest.parquet")
    index = preprocess_manifest(manifest, ingest_dir, cfg, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    for rec, row in zip(manifest.itertuples(), index.itertuples(), strict=True):
        arrays = model_inputs(np.load(ingest_dir / rec.array_path), rec.kind, cfg, rec.spacing_slice)
        np.testing.assert_array_equal(arrays[row.input_kind], np.load(tmp_path / "out" / row.image_path))
        if rec.kind == "ct_volume":
            np.testing.assert_array_equal(arrays["ct_volume"], np.load(tmp_path / "out" / row.volume_path))
            spec = input_spec("ct_volume", CFG)
            assert tuple(spec.to_tensor(arrays["ct_volume"]).shape) == spec.shape
    assert set(model_inputs(np.zeros((4, 8, 8), np.int16), "ct_volume", CFG)) == {"ct_stack"}  # no spacing: no volume
    with pytest.raises(DataError, match="unknown kind"):
        model_inputs(np.zeros((4, 4)), "mri", CFG)
