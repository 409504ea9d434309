"""The ground truth written with the synthetic dataset matches the images and itself."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from covidscan.config import SynthConfig
from covidscan.data.synth import (
    ANNOTATION_COLUMNS,
    CLINICAL_COLUMNS,
    LABEL_COLUMNS,
    READ_COLUMNS,
    READERS,
    SCALES,
    plan_dataset,
)
from covidscan.data.synth.truth import box_limits, pearson

from .conftest import read_csv


def _ct_hu(path: Path) -> np.ndarray:
    """HU volume (z ascending) of a synthetic series folder or Enhanced CT file."""
    if path.is_dir():
        dss = sorted((pydicom.dcmread(f) for f in path.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
        return np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    ds = pydicom.dcmread(path)
    t = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    assert z == sorted(z)
    return ds.pixel_array * float(t.RescaleSlope) + float(t.RescaleIntercept)


def test_csv_columns_and_paths(tiny_root: Path, tables: dict) -> None:
    assert tuple(read_csv(tiny_root / "labels.csv")[0]) == LABEL_COLUMNS
    assert tuple(read_csv(tiny_root / "annotations.csv")[0]) == ANNOTATION_COLUMNS
    assert tuple(read_csv(tiny_root / "reads.csv")[0]) == READ_COLUMNS
    assert tuple(read_csv(tiny_root / "clinical.csv")[0]) == CLINICAL_COLUMNS
    labels = {r["path"]: r for r in tables["labels"]}
    assert len(labels) == len(tables["labels"])
    for path, row in labels.items():
        assert not Path(path).is_absolute() and (tiny_root / path).exists()
        assert row["label"] in {"normal", "pneumonia", "covid19", "influenza"}
        assert row["modality"] in {"xray", "ct"} and row["origin"] in {"public", "hospital"}
        assert row["rtpcr_initial"] in {"positive", "negative", ""}
        assert 0.0 <= float(row["severity"]) <= 1.0
    assert set(tables["truth"]["cases"]) == set(labels)
    assert {r["centre"] for r in tables["labels"] if r["source"] == "mildct"} == {"centre_a", "centre_b", "centre_c", "centre_d"}
    combos = {(r["modality"], r["source"], r["label"]) for r in tables["labels"]}
    assert {("xray", "rsna", "normal"), ("xray", "rsna", "pneumonia"), ("xray", "ccd", "covid19"),
            ("ct", "luna16", "normal"), ("ct", "icnp", "pneumonia"), ("ct", "youan", "influenza"),
            ("xray", "youan", "influenza")} <= combos


def test_reads_cover_every_case_and_reader(tables: dict) -> None:
    reads = defaultdict(dict)
    for r in tables["reads"]:
        assert r["read"] in {"0", "1"}
        reads[r["path"]][r["reader"]] = int(r["read"])
    assert set(reads) == {r["path"] for r in tables["labels"]}
    assert all(set(v) == set(READERS) for v in reads.values())
    stated = tables["truth"]["readers"]
    assert {k: (v["stated_sensitivity"], v["stated_specificity"]) for k, v in stated.items()} == READERS


def test_boxes_follow_the_rules(tables: dict) -> None:
    labels = {r["path"]: r for r in tables["labels"]}
    truth = tables["truth"]["cases"]
    per_case = defaultdict(lambda: defaultdict(set))
    for a in tables["annotations"]:
        row, t = labels[a["path"]], truth[a["path"]]
        x0, y0, x1, y1 = (int(a[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= t["cols"] and 0 <= y0 < y1 <= t["rows"]
        k = int(a["slice_index"])
        if row["modality"] == "xray":
            assert k == 0
        else:
            assert 0 <= k < t["slices"]
        if a["reader"] == "adjudicated":
            lo, hi = box_limits(t["rows"])
            inner = (x1 - x0, y1 - y0)
            assert all(s <= round(hi) + 1 for s in inner)
        per_case[a["path"]][a["reader"]].add(k)
    for path, row in labels.items():
        if row["label"] == "normal":
            assert path not in per_case
            continue
        readers = per_case[path]
        assert set(readers) == {"reader1", "reader2", "adjudicated"}
        n_boxes = sum(1 for a in tables["annotations"] if a["path"] == path and a["reader"] == "adjudicated")
        if row["modality"] == "xray":
            assert 1 <= n_boxes <= 2
        else:
            assert 2 <= len(readers["adjudicated"]) <= 5


def test_covid_boxes_are_denser_than_the_lung_around_them(tiny_root: Path, tables: dict) -> None:
    labels = {r["path"]: r for r in tables["labels"]}
    boxes = defaultdict(list)
    for a in tables["annotations"]:
        if a["reader"] == "adjudicated" and labels[a["path"]]["modality"] == "ct":
            boxes[a["path"]].append(tuple(int(a[k]) for k in ("slice_index", "x0", "y0", "x1", "y1")))
    checked = Counter()
    for path, row in labels.items():
        if row["modality"] != "ct" or row["label"] not in {"covid19", "pneumonia"}:
            continue
        hu = _ct_hu(tiny_root / path)
        inside, background = [], []
        for k, x0, y0, x1, y1 in boxes[path]:
            inside.append(hu[k, y0:y1, x0:x1].mean())
            lung = hu[k][hu[k] < -700]
            background.append(np.median(lung))
        assert np.mean(inside) > np.mean(background) + 50, (path, inside, background)
        checked[row["label"]] += 1
    assert checked["covid19"] >= 3 and checked["pneumonia"] >= 3


def test_lesion_centres_lie_in_the_image(tables: dict) -> None:
    for path, case in tables["truth"]["cases"].items():
        assert (len(case["lesions"]) == 0) == (case["label"] == "normal")
        for lesion in case["lesions"]:
            assert all(0.0 <= v <= 1.0 for v in lesion["centre_norm"])
            if case["label"] == "covid19":
                assert -600 <= lesion["hu"] <= -300
            if case["label"] == "pneumonia":
                assert 0 <= lesion["hu"] <= 50
        if case["label"] == "covid19":
            assert 2 <= len(case["lesions"]) <= 5
            xs = [l["centre_mm"][0] for l in case["lesions"]]
            assert min(xs) < 0 < max(xs)  # bilateral
        if case["label"] == "pneumonia":
            assert len(case["lesions"]) == 1


def test_clinical_correlation_is_the_stated_one(tables: dict) -> None:
    clinical = tables["clinical"]
    truth = tables["truth"]
    labels = {r["path"]: r for r in tables["labels"]}
    assert len(clinical) >= 5
    assert {(labels[r["path"]]["label"], labels[r["path"]]["modality"], labels[r["path"]]["origin"]) for r in clinical} == {
        ("covid19", "ct", "hospital")}
    burden = np.array([truth["cases"][r["path"]]["burden"] for r in clinical])
    stated = truth["clinical"]["stated_correlation"]
    (group,) = truth["clinical"]["realised"].values()
    for name, r_stated in stated.items():
        values = np.array([float(r[name]) for r in clinical])
        r = pearson(burden, values)
        assert abs(r - r_stated) < 0.05, (name, r, r_stated)
        assert abs(r - group["pearson_r_with_burden"][name]) < 0.01
    assert stated["lymphocyte_pct"] < 0 < stated["crp"]


def test_mild_cases_and_negative_first_rtpcr_exist(tables: dict) -> None:
    truth = tables["truth"]["cases"]
    covid = [r for r in tables["labels"] if r["label"] == "covid19"]
    mild = [r for r in covid if truth[r["path"]]["mild"]]
    assert mild and all(float(r["severity"]) < 0.35 for r in mild)
    assert all(r["source"] == "mildct" or float(r["severity"]) < 0.35 for r in mild)
    mildct = [r for r in covid if r["source"] == "mildct"]
    assert all(truth[r["path"]]["mild"] for r in mildct)
    assert np.median([truth[r["path"]]["burden"] for r in mild]) < np.median(
        [truth[r["path"]]["burden"] for r in covid if not truth[r["path"]]["mild"]])
    assert any(r["rtpcr_initial"] == "negative" for r in covid)
    assert {r["rtpcr_initial"] for r in tables["labels"] if r["origin"] == "public"} == {""}


@pytest.mark.parametrize(
    ("scale", "n_xray", "n_ct", "covid_per_centre"),
    [("tiny", (15, 40), (25, 60), 2), ("demo", (330, 380), (500, 600), 12), ("paper", (9540, 9540), (2829, 2829), 85)],
)
def test_scale_table_counts(scale: str, n_xray: tuple[int, int], n_ct: tuple[int, int], covid_per_centre: int) -> None:
    spec = SCALES[scale]
    from covidscan.data.synth import SOURCES

    def cases(s, c, n):
        return spec.cases(n, s.modality, c in s.clinical_classes, source=s.key, label=c)

    xray = sum(cases(s, c, n) for s in SOURCES for c, n in s.counts.items() if s.modality == "xray")
    ct = sum(cases(s, c, n) for s in SOURCES for c, n in s.counts.items() if s.modality == "ct")
    assert n_xray[0] <= xray <= n_xray[1] and n_ct[0] <= ct <= n_ct[1]
    per_centre = [cases(s, "covid19", s.counts["covid19"]) for s in SOURCES if s.name == "mildct"]
    assert min(per_centre) >= covid_per_centre
    slices = {spec.ct_slices(s.paper_slices) for s in SOURCES if s.modality == "ct"}
    assert len(slices) >= 4


def test_plan_is_deterministic_and_seed_dependent() -> None:
    a = plan_dataset(SynthConfig(scale="tiny", seed=1))
    b = plan_dataset(SynthConfig(scale="tiny", seed=1))
    c = plan_dataset(SynthConfig(scale="tiny", seed=2))
    assert [x.path for x in a.cases] == [x.path for x in b.cases]
    assert [x.severity for x in a.cases] == [x.severity for x in b.cases]
    assert [x.path for x in a.cases] != [x.path for x in c.cases]
