"""The content-hash cache and preprocess_manifest on a tiny ingest folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.preprocess.cache import (
    CROP_COLUMNS,
    INDEX_COLUMNS,
    ArrayCache,
    array_digest,
    cache_key,
    preprocess_manifest,
    save_npy_atomic,
)
from covidscan.preprocess.ct import ct_stack
from covidscan.preprocess.spec import input_spec
from covidscan.preprocess.xray import preprocess_2d

CFG = PreprocessConfig(xray_size=32, ct_size=24, ct_slices=9, volume_size=16, volume_slices=6, crop_size=16)


def _run(ingest_dir: Path, tmp_path: Path, cfg: PreprocessConfig = CFG, **kwargs) -> pd.DataFrame:
    manifest = kwargs.pop("manifest", None)
    if manifest is None:
        manifest = pd.read_parquet(ingest_dir / "manifest.parquet")
    return preprocess_manifest(manifest, ingest_dir, cfg, tmp_path / "processed", cache_dir=tmp_path / "cache", progress=False, **kwargs)


def _cache_files(tmp_path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.npy")}


def test_array_digest_sees_bytes_dtype_and_shape():
    a = np.arange(6, dtype=np.int16)
    d = array_digest(a)
    assert d == array_digest(a.copy())
    assert d != array_digest(a.reshape(2, 3))
    assert d != array_digest(a.astype(np.int32))
    b = a.copy()
    b[0] = 1
    assert d != array_digest(b)


def test_cache_key_depends_on_every_part():
    base = cache_key("abc", "xray", {"xray_size": 512})
    assert base == cache_key("abc", "xray", {"xray_size": 512})
    assert base != cache_key("abd", "xray", {"xray_size": 512})
    assert base != cache_key("abc", "ct_stack", {"xray_size": 512})
    assert base != cache_key("abc", "xray", {"xray_size": 256})
    assert base != cache_key("abc", "xray", {"xray_size": 512}, {"spacing_slice": 1.0})
    assert base != cache_key("abc", "xray", {"xray_size": 512}, version="other")


def test_save_npy_atomic_leaves_no_temporary_files(tmp_path):
    path = save_npy_atomic(tmp_path / "a" / "x.npy", np.ones((3, 2), np.float16))
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.npy"]
    assert np.load(path, mmap_mode="r").dtype == np.float16


def test_array_cache_computes_once(tmp_path):
    cache = ArrayCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.zeros(3), "b": np.ones(2)}

    keys = {"a": "k" * 64, "b": "j" * 64}
    first = cache.get_or_compute(keys, compute)
    second = cache.get_or_compute(keys, compute)
    assert first == second and len(calls) == 1
    assert (cache.misses, cache.hits) == (2, 2)
    # a wrong shape in a cached entry is treated as a miss
    cache.get_or_compute(keys, compute, {"a": ((4,), None)})
    assert len(calls) == 2


def test_preprocess_manifest_outputs(ingest_dir, tmp_path):
    index = _run(ingest_dir, tmp_path)
    out = tmp_path / "processed"
    assert list(index.columns) == INDEX_COLUMNS
    assert index["record_id"].tolist() == ["x1", "x2", "s1", "c1", "c2"]
    assert index.set_index("record_id")["input_kind"].to_dict() == {"x1": "xray", "x2": "xray", "s1": "ct_slice2d", "c1": "ct_stack", "c2": "ct_stack"}
    pd.testing.assert_frame_equal(pd.read_parquet(out / "index.parquet"), index)
    specs = json.loads((out / "input_specs.json").read_text())["specs"]
    expected = {
        "xray": ((3, 32, 32), np.uint8),
        "ct_slice2d": ((3, 24, 24), np.uint8),
        "ct_stack": ((9, 24, 24), np.uint8),
    }
    for row in index.itertuples():
        shape, dtype = expected[row.input_kind]
        img = np.load(out / row.image_path, mmap_mode="r")
        assert img.shape == shape and img.dtype == dtype
        assert tuple(specs[row.input_kind]["stored_shape"]) == shape
        if row.kind == "ct_volume":
            vol = np.load(out / row.volume_path, mmap_mode="r")
            assert vol.shape == (6, 16, 16) and vol.dtype == np.float16 and 0 <= vol.min() and vol.max() <= 1
            assert row.grey_path == ""
        else:
            grey = np.load(out / row.grey_path)
            assert grey.shape == shape[1:] and grey.dtype == np.uint8
            assert row.volume_path == ""
    # the arrays are exactly what the serving functions produce
    x1 = np.load(ingest_dir / "arrays/x1.npy")
    np.testing.assert_array_equal(np.load(out / index.loc[0, "image_path"]), preprocess_2d(x1, CFG))
    c1 = np.load(ingest_dir / "arrays/c1.npy")
    np.testing.assert_array_equal(np.load(out / index.loc[3, "image_path"]), ct_stack(c1, CFG))


def test_lesion_crops_only_from_adjudicated_boxes(ingest_dir, tmp_path):
    index = _run(ingest_dir, tmp_path).set_index("record_id")
    out = tmp_path / "processed"
    assert index["n_crops"].to_dict() == {"x1": 2, "x2": 0, "s1": 0, "c1": 2, "c2": 0}
    crops = pd.read_parquet(out / "crops.parquet")
    assert list(crops.columns) == CROP_COLUMNS
    assert crops[crops.record_id == "c1"]["slice_index"].tolist() == [3, 8]
    arr = np.load(out / index.loc["c1", "crops_path"], mmap_mode="r")
    assert arr.shape == (2, 3, 16, 16) and arr.dtype == np.uint8
    assert index.loc["x2", "crops_path"] == ""
    assert input_spec("lesion_crop", CFG).stored_shape == (3, 16, 16)


def test_second_run_does_no_work(ingest_dir, tmp_path):
    first = _run(ingest_dir, tmp_path)
    assert first.attrs["misses"] > 0 and first.attrs["hits"] == 0
    before = _cache_files(tmp_path)
    second = _run(ingest_dir, tmp_path)
    assert second.attrs["misses"] == 0 and second.attrs["hits"] == first.attrs["misses"]
    assert _cache_files(tmp_path) == before  # nothing rewritten
    pd.testing.assert_frame_equal(first, second)


def test_outputs_are_links_to_cache_entries(ingest_dir, tmp_path):
    index = _run(ingest_dir, tmp_path)
    cached = {p.stat().st_ino for p in (tmp_path / "cache").rglob("*.npy")}
    assert (tmp_path / "processed" / index.loc[0, "image_path"]).stat().st_ino in cached
    copied = _run(ingest_dir, tmp_path, link="copy")
    assert (tmp_path / "processed" / copied.loc[0, "image_path"]).stat().st_ino not in cached


def test_parameter_change_recomputes_only_what_it_touches(ingest_dir, tmp_path):
    _run(ingest_dir, tmp_path)
    index = _run(ingest_dir, tmp_path, CFG.model_copy(update={"ct_slices": 12}))
    assert index.attrs["misses"] == 2  # the two CT stacks; volumes, X-rays and crops are hits
    assert np.load(tmp_path / "processed" / index.loc[3, "image_path"]).shape == (12, 24, 24)
    index = _run(ingest_dir, tmp_path, CFG.model_copy(update={"colormap": "gray3"}))
    # the pseudo-coloured images of x1, x2, s1 (+ their grey partners) and the 2 crop sets change
    assert index.attrs["misses"] == 3 * 2 + 2
    img = np.load(tmp_path / "processed" / index.loc[0, "image_path"])
    np.testing.assert_array_equal(img[0], img[2])


@pytest.mark.parametrize("use_manifest_hash", [True, False])
def test_input_change_invalidates(ingest_dir, tmp_path, use_manifest_hash):
    """The input hash is the manifest's content_sha256 when present, else the array's own digest."""
    manifest = pd.read_parquet(ingest_dir / "manifest.parquet")
    if not use_manifest_hash:
        manifest = manifest.drop(columns=["content_sha256"])
    assert _run(ingest_dir, tmp_path, manifest=manifest).attrs["misses"] > 0
    arr = np.load(ingest_dir / "arrays/x2.npy")
    arr[:5] += 100.0
    np.save(ingest_dir / "arrays/x2.npy", arr)
    if use_manifest_hash:  # ingest rewrites the hash with the array
        manifest.loc[manifest.record_id == "x2", "content_sha256"] = hashlib.sha256(arr.tobytes()).hexdigest()
    index = _run(ingest_dir, tmp_path, manifest=manifest)
    assert index.attrs["misses"] == 2  # x2's image and grey; everything else unchanged
    if not use_manifest_hash:
        assert index.loc[1, "input_sha256"] == array_digest(arr)


def test_dropped_records_lose_their_files(ingest_dir, tmp_path):
    _run(ingest_dir, tmp_path)
    manifest = pd.read_parquet(ingest_dir / "manifest.parquet")
    _run(ingest_dir, tmp_path, manifest=manifest[manifest.record_id != "c1"])
    out = tmp_path / "processed"
    assert not (out / "ct_stack" / "c1.npy").exists() and not (out / "lesion_crop" / "c1.npy").exists()
    assert (out / "ct_stack" / "c2.npy").exists()


def test_unsafe_record_ids_get_hashed_file_names(ingest_dir, tmp_path):
    manifest = pd.read_parquet(ingest_dir / "manifest.parquet")
    manifest.loc[0, "record_id"] = "../evil/name"
    index = _run(ingest_dir, tmp_path, manifest=manifest)
    path = index.loc[0, "image_path"]
    assert path.startswith("xray/r-") and ".." not in path


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: m.assign(array_path=m.array_path.where(m.record_id != "x2", "arrays/missing.npy")), "not found"),
        (lambda m: m.assign(spacing_slice=np.nan), "spacing"),
        (lambda m: m.assign(kind=m.kind.replace("xray", "mri")), "unknown kind"),
        (lambda m: pd.concat([m, m.iloc[:1]]), "more than once"),
    ],
)
def test_bad_manifests_raise_data_error(ingest_dir, tmp_path, change, match):
    manifest = change(pd.read_parquet(ingest_dir / "manifest.parquet"))
    with pytest.raises(DataError, match=match):
        _run(ingest_dir, tmp_path, manifest=manifest)


def test_box_outside_image_names_the_record(ingest_dir, tmp_path):
    ann = pd.DataFrame([("x2", "adjudicated", 0, 500, 500, 520, 520)], columns=["record_id", "reader", "slice_index", "x0", "y0", "x1", "y1"])
    with pytest.raises(DataError, match="record x2.*outside"):
        _run(ingest_dir, tmp_path, annotations=ann)
    ann = pd.DataFrame([("c2", "adjudicated", 99, 1, 1, 5, 5)], columns=ann.columns)
    with pytest.raises(DataError, match="slice_index 99"):
        _run(ingest_dir, tmp_path, annotations=ann)


def test_no_temporary_files_left(ingest_dir, tmp_path):
    _run(ingest_dir, tmp_path)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert os.listdir(tmp_path / "processed")


def test_worker_processes_give_the_same_result(ingest_dir, tmp_path):
    serial = _run(ingest_dir, tmp_path / "serial")
    parallel = _run(ingest_dir, tmp_path / "parallel", workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert parallel.attrs == serial.attrs
    for row in serial.itertuples():
        np.testing.assert_array_equal(np.load(tmp_path / "serial/processed" / row.image_path), np.load(tmp_path / "parallel/processed" / row.image_path))
    assert _run(ingest_dir, tmp_path / "parallel", workers=2).attrs["misses"] == 0
