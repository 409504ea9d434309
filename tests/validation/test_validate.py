"""Great Expectations data-quality gates on a tiny written ingest folder: the clean fixture passes,
and each planted defect fails with a message that names it. One GE context per module (GE is slow
to import); real GE runs, no mocks."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ingest_fixture.py

from ingest_fixture import SPLITS, SUBSETS, build_ingest  # noqa: E402

from covidscan.config import ValidationConfig  # noqa: E402
from covidscan.data.splits import split_manifest  # noqa: E402
from covidscan.errors import DataError, ValidationFailed  # noqa: E402
from covidscan.validation import ValidationReport, make_context, validate  # noqa: E402

CFG = ValidationConfig()


@pytest.fixture(scope="module")
def context():
    return make_context()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    fx = build_ingest(tmp_path_factory.mktemp("clean"), seed=3)
    splits = split_manifest(fx.manifest, fx.root, SUBSETS, SPLITS, 3, clinical=fx.clinical, annotations=fx.annotations)
    return fx, splits.table


@pytest.fixture
def dirty(clean, tmp_path):
    """A writable copy of the clean ingest folder and split table, to plant one defect in."""
    fx, table = clean
    root = tmp_path / "ingest"
    shutil.copytree(fx.root, root)
    return root, table.copy()


def _run(root: Path, table: pd.DataFrame, context, **kwargs):
    return validate(root, CFG, splits=table, splits_cfg=SPLITS, subset_names=list(SUBSETS), context=context, **kwargs)


def test_clean_fixture_passes_and_builds_data_docs(clean, context, tmp_path):
    fx, table = clean
    report = _run(fx.root, table, context, docs_dir=tmp_path / "docs")
    assert isinstance(report, ValidationReport) and report.success, report.summary()
    names = {s.name for s in report.suites}
    assert {"manifest.columns", "manifest", "images.xray", "images.ct_volume", "clinical", "annotations", "reads"} <= names
    assert {"splits.rows", "splits.patients", "splits.groups", "splits.subsets"} <= names
    assert all(s.evaluated > 0 and s.rows > 0 for s in report.suites)
    index = tmp_path / "docs" / "index.html"
    assert report.docs_index == index.resolve() and index.is_file()
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert {p.parts[len((tmp_path / "docs" / "validations").parts)] for p in pages} >= {"manifest", "images", "splits"}
    html = index.read_text()
    assert "manifest" in html and "<html" in html.lower()
    assert json.loads(json.dumps(report.to_dict()))["success"] is True
    assert "passed" in report.summary()


def _fails(root, table, context, *needles: str) -> str:
    with pytest.raises(ValidationFailed) as info:
        _run(root, table, context)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in:\n{message}"
    assert info.value.report.success is False
    return message


def _manifest(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "manifest.parquet")


def test_unknown_class(dirty, context):
    root, table = dirty
    m = _manifest(root)
    m.loc[3, "label"] = "covid"
    m.to_parquet(root / "manifest.parquet", index=False)
    _fails(root, table, context, "[manifest] label is a known class", "column 'label'", f"record_id={m.loc[3, 'record_id']}", "label=covid")


def test_missing_array_file(dirty, context):
    root, table = dirty
    m = _manifest(root)
    gone = m.loc[5, "array_path"]
    (root / gone).unlink()
    _fails(root, table, context, "array file exists", "array_present", f"array_path={gone}")


def test_patient_in_train_and_test(dirty, context):
    root, table = dirty
    m = _manifest(root)
    multi = m.groupby("patient_id")["record_id"].transform("size") > 1
    rid = m.loc[multi & (m["modality"] == "xray"), "record_id"].iloc[0]
    patient = m.loc[m["record_id"] == rid, "patient_id"].iloc[0]
    row = table.index[(table["record_id"] == rid) & (table["subset"] == "XPDS")]
    if len(row) == 0:
        row = table.index[table["record_id"] == rid][:1]
    flip = "test" if table.loc[row[0], "part"] == "trainval" else "trainval"
    table.loc[row, ["part", "fold"]] = [flip, -1 if flip == "test" else 0]
    msg = _fails(root, table, context, "no patient in both train-val and test", f"patient_id={patient}")
    assert "no near-duplicate group in both train-val and test" in msg  # its group crosses too


def test_group_in_two_folds(dirty, context):
    root, table = dirty
    tv = table[(table["subset"] == "XHDS") & (table["part"] == "trainval")]
    group = tv.groupby("group_id").filter(lambda g: len(g) > 1)["group_id"].iloc[0]
    row = tv.index[tv["group_id"] == group][0]
    table.loc[row, "fold"] = (table.loc[row, "fold"] + 1) % SPLITS.n_folds
    _fails(root, table, context, "no near-duplicate group in two folds", f"group_id={group}", "subset=XHDS")


def test_identifying_column(dirty, context):
    root, table = dirty
    m = _manifest(root)
    m["PatientName"] = "DOE^JOHN"
    m.to_parquet(root / "manifest.parquet", index=False)
    msg = _fails(root, table, context, "no identifying column", "column=PatientName", "every manifest column is in the schema")
    assert "DOE" not in msg  # names the column, never echoes its values


def test_missing_schema_column(dirty, context):
    root, table = dirty
    _manifest(root).drop(columns=["centre"]).to_parquet(root / "manifest.parquet", index=False)
    _fails(root, table, context, "every schema column is in the manifest", "missing: centre")


def test_ct_hounsfield_outside_physical_range(dirty, context):
    root, table = dirty
    m = _manifest(root)
    ct = m[m["kind"] == "ct_volume"].iloc[0]
    vol = np.load(root / ct.array_path)
    np.save(root / ct.array_path, (vol.astype(np.int32) + 5000).astype(np.int16))  # e.g. raw values, no rescale
    _fails(root, table, context, "[images.ct_volume] CT Hounsfield units within the physical range", "column 'v_high'", f"record_id={ct.record_id}")


def test_box_outside_image(dirty, context):
    root, table = dirty
    a = pd.read_parquet(root / "annotations.parquet")
    a.loc[0, ["x0", "x1"]] = [30.0, 45.0]  # image is 32 px wide
    a.to_parquet(root / "annotations.parquet", index=False)
    _fails(root, table, context, "[annotations] the box lies inside the image", f"record_id={a.loc[0, 'record_id']}", "x1=45")


def test_clinical_out_of_range_and_missing(dirty, context):
    root, table = dirty
    c = pd.read_parquet(root / "clinical.parquet")
    c.loc[0, "crp"] = 9999.0
    c.loc[1, "wbc"] = np.nan
    c.to_parquet(root / "clinical.parquet", index=False)
    _fails(root, table, context, "crp within [0.0, 500.0]", "crp=9999", "wbc missing in at most 0% of cases")


def test_pseudonym_and_report_without_raising(dirty, context):
    root, table = dirty
    m = _manifest(root)
    m.loc[0, "patient_id"] = "Lung_Dx-A0002"
    m.to_parquet(root / "manifest.parquet", index=False)
    report = _run(root, table, context, raise_on_failure=False)
    assert not report.success
    failed = [f for f in report.failures if f.column == "patient_id_pseudonymised"]
    assert failed and failed[0].suite == "manifest" and f"record_id={m.loc[0, 'record_id']}" in failed[0].line()
    assert "Lung_Dx" not in json.dumps(report.to_dict())  # the raw identifier is never echoed
    assert report.to_dict()["failures"][0]["suite"]


def test_missing_manifest_is_a_data_error(tmp_path, context):
    with pytest.raises(DataError, match="manifest.parquet"):
        validate(tmp_path, CFG, context=context)


def test_ct_padding_is_not_out_of_range_but_bounded(dirty, context):
    """Scanner padding (-3024 HU outside the reconstruction circle) is excluded from the HU range;
    a volume that is mostly padding still fails, naming the padding check."""
    root, table = dirty
    m = _manifest(root)
    cts = m[m["kind"] == "ct_volume"]
    first, second = cts.iloc[0], cts.iloc[1]
    vol = np.load(root / first.array_path)
    vol[:, :, :4] = -3024  # a padded border: 1/8 of the voxels
    np.save(root / first.array_path, vol)
    mostly = np.load(root / second.array_path)
    mostly[:, :, :28] = -3024  # 7/8 padding
    np.save(root / second.array_path, mostly)
    msg = _fails(root, table, context, "is padding", f"record_id={second.record_id}")
    assert f"record_id={first.record_id}" not in msg and "physical range" not in msg
