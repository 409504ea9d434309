"""Patient-grouped, near-duplicate-aware splits (covidscan.data.splits) on tiny written fixtures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ingest_fixture.py

from ingest_fixture import SPLITS, SUBSETS, build_ingest, smooth_image  # noqa: E402

from covidscan.config import SplitsConfig, SubsetSpec  # noqa: E402
from covidscan.data.splits import (  # noqa: E402
    SPLIT_COLUMNS,
    assign_groups,
    hash_records,
    image_hash,
    make_splits,
    near_duplicate_pairs,
    part_name,
    select_subset,
    read_splits,
    split_manifest,
    write_splits,
)
from covidscan.errors import ConfigError, DataError  # noqa: E402

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata-dev"


def _split(fx, seed: int = 0, cfg: SplitsConfig = SPLITS, subsets=SUBSETS):
    return split_manifest(fx.manifest, fx.root, subsets, cfg, seed, clinical=fx.clinical, annotations=fx.annotations)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return build_ingest(tmp_path_factory.mktemp("ingest"), seed=0)


@pytest.fixture(scope="module")
def result(fx):
    return _split(fx)


def _with_patients(table: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    return table.merge(manifest[["record_id", "patient_id", "source", "centre"]], on="record_id", how="left")


# ------------------------------------------------------------------------------------ hashes
@pytest.mark.parametrize("method", ["phash", "dhash"])
def test_hash_separates_distinct_images_and_joins_near_duplicates(method):
    rng = np.random.default_rng(1)
    images = [smooth_image(rng, 64) for _ in range(12)]
    hashes = [image_hash(im, method) for im in images]
    noisy = image_hash(np.clip(images[0] + 0.003 * rng.standard_normal(images[0].shape), 0, 1) * 4000 - 1000, method)
    assert all(0 <= h < 2**64 for h in hashes)
    assert bin(hashes[0] ^ noisy).count("1") <= 4  # rescaled + noisy copy: same hash, or nearly
    distinct = [bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distinct) > 4


@pytest.mark.parametrize(
    "kwargs, shape, expected",
    [({"method": "phash"}, (32, 32), int), ({"method": "dhash"}, (17, 40), int), ({"method": "phash"}, (8, 8), type(None))],
)
def test_image_hash_shapes(kwargs, shape, expected):
    image = np.zeros(shape, np.float32) if expected is type(None) else np.random.default_rng(0).random(shape)
    assert isinstance(image_hash(image, **kwargs), expected)  # a constant image is not hashed


def test_image_hash_rejects_3d():
    with pytest.raises(ValueError, match="2D"):
        image_hash(np.zeros((3, 8, 8)))


def test_near_duplicate_pairs_threshold():
    hashes = [0b0, 0b111, 0b1111111, 2**64 - 1]
    assert near_duplicate_pairs(hashes, 3) == [(0, 1)]
    assert sorted(near_duplicate_pairs(hashes, 4)) == [(0, 1), (1, 2)]
    assert near_duplicate_pairs(hashes, 3, block=1) == [(0, 1)]


def test_cross_source_near_duplicates_share_a_group(fx, result):
    """The same image (tiny noise) under two patients in two sources lands in one group, in one part/fold."""
    m = fx.manifest
    hashes = hash_records(m, fx.root)
    grouping = assign_groups(m, hashes, SPLITS.phash_max_distance)
    for modality in ("xray", "ct"):
        dup = m[m["record_id"] == m.loc[m["modality"] == modality, "record_id"].max()].iloc[0]  # planted last
        same_group = grouping.group_id[grouping.group_id == grouping.group_id[dup.record_id]].index
        partners = m[m["record_id"].isin(same_group) & (m["patient_id"] != dup.patient_id)]
        assert len(partners) >= 1, f"{modality}: near-duplicate not grouped"
        assert (partners["source"] != dup.source).all() and (partners["origin"] == "public").all()
        rows = result.table[result.table["group_id"] == grouping.group_id[dup.record_id]]
        assert rows.groupby("subset")[["part", "fold"]].nunique().max().max() == 1
        ttsf = rows[~rows["subset"].isin(SPLITS.centre_subsets)]  # centre splits are independent
        assert ttsf[["part", "fold"]].drop_duplicates().shape[0] == 1  # same part and fold in every subset


def test_grouping_without_hashes_is_by_patient(fx):
    g = assign_groups(fx.manifest, None, 4)
    per_patient = fx.manifest.assign(g=fx.manifest["record_id"].map(g.group_id)).groupby("patient_id")["g"].nunique()
    assert (per_patient == 1).all()
    assert g.group_id.nunique() == fx.manifest["patient_id"].nunique()


# ------------------------------------------------------------------------------------ splits
@pytest.mark.parametrize("seed, scale", [(0, 1), (1, 1), (2, 2), (3, 1), (4, 2)])
def test_no_patient_or_group_crosses_parts_or_folds(tmp_path, seed, scale):
    fx = build_ingest(tmp_path, seed=seed, scale=scale)
    res = _split(fx, seed=seed)
    t = _with_patients(res.table, fx.manifest)
    assert set(t["subset"]) == set(SUBSETS) | set(SPLITS.mixed)
    for key in ("patient_id", "group_id"):
        spread = t.groupby(["subset", key]).agg(parts=("part", "nunique"))
        assert (spread["parts"] == 1).all(), f"{key} in two parts: {spread[spread['parts'] > 1]}"
        tv = t[t["part"] == "trainval"].groupby(["subset", key])["fold"].nunique()
        assert (tv == 1).all(), f"{key} in two folds"
    # one assignment per group across all TTSF sub-datasets and the mixed sets
    ttsf = t[~t["subset"].isin(SPLITS.centre_subsets)]
    assert (ttsf.groupby("group_id")[["part", "fold"]].nunique() == 1).all().all()
    # mixed = union of its members, part by part
    for mixed, members in SPLITS.mixed.items():
        key = ["record_id", "part", "fold"]
        got = t.loc[t["subset"] == mixed, key].sort_values(key).reset_index(drop=True)
        want = t.loc[t["subset"].isin(members), key].drop_duplicates().sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
    assert (t.loc[t["part"] == "test", "fold"] == -1).all()
    assert t.loc[t["part"] == "trainval", "fold"].between(0, SPLITS.n_folds - 1).all()


def test_deterministic_for_seed(fx, result):
    again = _split(fx, seed=0)
    pd.testing.assert_frame_equal(result.table, again.table)
    assert result.summary["table_sha256"] == again.summary["table_sha256"]
    other = _split(fx, seed=7)
    assert not other.table[["part", "fold"]].equals(result.table[["part", "fold"]])


def test_folds_are_stratified(fx, result):
    t = result.table
    for name in ("XPDS", "XHDS", "CTPDS", "CTHDS", "CSDS"):
        tv = t[(t["subset"] == name) & (t["part"] == "trainval")]
        groups_per_class = tv.groupby("label")["group_id"].nunique()
        for label, n_groups in groups_per_class.items():
            if n_groups >= SPLITS.n_folds:
                folds = tv.loc[tv["label"] == label, "fold"].nunique()
                assert folds == SPLITS.n_folds, f"{name}: class {label} missing from a fold"


def test_test_part_is_stratified_and_sized(fx, result):
    s = result.summary["subsets"]["XPDS"]
    assert s["stratified"] and s["groups_inherited"] == 0
    t = result.table[result.table["subset"] == "XPDS"]
    groups = t.groupby("group_id")["part"].first()
    assert (groups == "test").sum() == int(np.ceil(SPLITS.test_size * len(groups)))
    assert set(t.loc[t["part"] == "test", "label"]) == set(SUBSETS["XPDS"].classes)


def test_centre_held_out_split(fx, result):
    t = _with_patients(result.table, fx.manifest)
    cs = t[t["subset"] == "CSDS"]
    assert set(cs.loc[cs["part"] == "test", "centre"]) == {"centre_d"}
    assert "centre_d" not in set(cs.loc[cs["part"] == "trainval", "centre"])
    assert (cs["binary_label"] == (cs["label"] == "covid19").astype(int)).all()
    assert dict(cs[["label", "yao_subset"]].drop_duplicates().values) == {"covid19": "S1", "normal": "S2", "pneumonia": "S3"}
    assert result.summary["subsets"]["CSDS"]["centres_test"] == ["centre_d"]


def test_clinical_subset_requires_clinical_and_annotations(fx, result):
    cads = result.table[result.table["subset"] == "CADS"]
    assert len(cads) > 0
    assert set(cads["record_id"]) <= set(fx.clinical["record_id"]) & set(fx.annotations["record_id"])
    # CADS is split first (smallest), CTHDS inherits its groups: one assignment, as the paper's 75/20 twice
    cth = result.table[result.table["subset"] == "CTHDS"].set_index("record_id")
    assert (cth.loc[cads["record_id"], "part"].to_numpy() == cads["part"].to_numpy()).all()


@pytest.mark.parametrize(
    "subset, part, expected",
    [("XPDS", "trainval", "XPTS"), ("XPDS", "test", "XPVS"), ("CTMDS", "trainval", "CTMTS"), ("CADS", "test", "CAVS"), ("CSX", "test", "CSX_VS")],
)
def test_part_name(subset, part, expected):
    assert part_name(subset, part) == expected


def test_empty_subset_names_itself(fx):
    subsets = {"XIDS": SubsetSpec(modality="xray", sources=["nowhere"], classes=["covid19"])}
    with pytest.raises(DataError, match="subsets.XIDS selects no records"):
        make_splits(fx.manifest, subsets, SplitsConfig(), 0)  # the only sub-dataset: nothing to split at all


def test_unknown_centre_subset_is_a_config_error(fx):
    with pytest.raises(ConfigError, match="centre_subsets names \\['NOPE'\\]"):
        make_splits(fx.manifest, SUBSETS, SplitsConfig(centre_subsets=["NOPE"]), 0)


def test_centre_split_without_test_centre(fx):
    cfg = SplitsConfig(centre_subsets=["CSDS"], centre_test=["centre_z"])
    with pytest.raises(DataError, match="centre_z"):
        make_splits(fx.manifest, {"CSDS": SUBSETS["CSDS"]}, cfg, 0)


def test_write_and_read(tmp_path, result):
    table_path, summary_path = write_splits(result, tmp_path / "splits")
    back = read_splits(tmp_path / "splits")
    assert list(back.columns) == list(SPLIT_COLUMNS)
    pd.testing.assert_frame_equal(back, result.table)
    summary = json.loads(summary_path.read_text())
    assert summary["part_names"]["XMDS"] == {"trainval": "XMTS", "test": "XMVS"}
    assert summary["grouping"]["near_duplicate_pairs"] >= 2
    with pytest.raises(DataError, match="not found"):
        read_splits(tmp_path / "nothing")


@pytest.mark.realdata
@pytest.mark.parametrize("modality", ["cxr", "ct"])
def test_realdata_phash_joins_copies_and_keeps_distinct_images_apart(modality):
    """Real images: a resized, JPEG-recompressed copy stays within the threshold, while images the
    curators put in different duplicate groups never come that close (no false merges)."""
    if not REALDATA.is_dir():
        pytest.skip("realdata-dev absent")
    import cv2

    meta = pd.read_csv(REALDATA / "manifest.csv")
    sub = meta[meta["modality"] == modality].head(80).reset_index(drop=True)  # keep it quick
    threshold = SplitsConfig().phash_max_distance
    originals, copies = [], []
    for path in sub["path"]:
        img = cv2.imread(str(REALDATA / path), cv2.IMREAD_GRAYSCALE)
        small = cv2.resize(img, (img.shape[1] * 2 // 3, img.shape[0] * 2 // 3), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
        originals.append(image_hash(img))
        copies.append(image_hash(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)))
    assert max(bin(a ^ b).count("1") for a, b in zip(originals, copies)) <= threshold
    pairs = near_duplicate_pairs(originals, threshold)
    false_merges = [(i, j) for i, j in pairs if sub["group_id"][i] != sub["group_id"][j]]
    assert false_merges == []


@pytest.mark.parametrize("max_patients, largest", [(None, 8), (2, 2), (3, 3)])
def test_look_alike_chains_are_capped(max_patients, largest):
    """A chain of look-alike images (each one bit from the next) is not one giant group."""
    ids = [f"r{i}" for i in range(8)]
    manifest = pd.DataFrame({"record_id": ids, "patient_id": [f"p-{i:016x}" for i in range(8)], "modality": "xray"})
    hashes = pd.Series({r: (1 << (i + 1)) - 1 for i, r in enumerate(ids)}, dtype=object)  # 0b1, 0b11, 0b111, ...
    g = assign_groups(manifest, hashes, 1, max_patients)
    assert g.group_id.value_counts().max() == largest
    assert (len(g.rejected_pairs) > 0) == (max_patients is not None)
    assert g.summary()["near_duplicate_pairs_rejected"] == len(g.rejected_pairs)


def test_small_subset_split_before_its_superset(fx, result):
    """CADS (covid19 CT with clinical data) gets its own test part although CTHDS contains it."""
    s = result.summary["subsets"]
    assert s["CADS"]["groups_inherited"] == 0 and s["CADS"]["n_test"] > 0 and s["CADS"]["n_trainval"] > 0
    assert s["CTHDS"]["groups_inherited"] >= s["CADS"]["n_groups"]


def test_hash_method_none_groups_by_patient_and_identical_arrays(fx):
    res = _split(fx, cfg=SPLITS.model_copy(update={"hash_method": "none"}))
    assert res.summary["grouping"]["near_duplicate_pairs"] == 0
    assert res.summary["grouping"]["n_groups"] == fx.manifest["patient_id"].nunique()


def test_a_subset_without_records_is_skipped_with_its_reason(fx):
    subsets = {**SUBSETS, "XIDS": SubsetSpec(modality="xray", sources=["nowhere"], classes=["covid19"]),
               "CTSDS": SubsetSpec(modality="ct", kinds=["ct_slice2d"], classes=["normal", "covid19"])}  # fmt: skip
    result = make_splits(fx.manifest, subsets, SPLITS, 0, clinical=fx.clinical, annotations=fx.annotations)
    assert set(result.table["subset"]) >= set(SUBSETS) and not {"XIDS", "CTSDS"} & set(result.table["subset"])
    for name in ("XIDS", "CTSDS"):
        info = result.summary["subsets"][name]
        assert info["skipped"] is True and f"subsets.{name} selects no records" in info["why"]
    assert "kinds=['ct_slice2d']" in result.summary["subsets"]["CTSDS"]["why"]


def test_kinds_select_records_of_those_kinds_only(fx):
    spec = SubsetSpec(modality="ct", classes=["normal", "pneumonia", "covid19", "influenza"], kinds=["ct_volume"])
    rows = select_subset(fx.manifest, "CTV", spec)
    assert len(rows) > 0 and set(rows["kind"]) == {"ct_volume"}
