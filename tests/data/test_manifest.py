"""The manifest schema, typed schema errors, forbidden columns, atomic writes."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from covidscan.data import manifest as mf
from covidscan.errors import DataError


def _row(i: int = 0, **over) -> dict:
    row = {
        "record_id": f"r-{i:016x}", "patient_id": f"p-{i:016x}", "study_id": f"s-{i:016x}", "modality": "xray",
        "kind": "xray", "label": "covid19", "source": "srcA", "centre": "centre_a", "origin": "public",
        "array_path": f"arrays/ab/{i:064x}.npy", "rows": 32, "cols": 30, "n_slices": 1, "spacing_row": 0.2,
        "spacing_col": 0.2, "spacing_slice": math.nan, "manufacturer": "", "transfer_syntax": "image/png",
        "photometric": "MONOCHROME2", "rtpcr_initial": "", "severity": math.nan, "content_sha256": f"{i:064x}",
    }
    row.update(over)
    return row


def test_round_trip_keeps_columns_and_dtypes(tmp_path):
    df = pd.DataFrame([_row(0), _row(1, kind="ct_volume", modality="ct", n_slices=5, spacing_slice=2.5, severity=0.4)])
    path = mf.write_manifest(df, tmp_path / "manifest.parquet")
    schema = pq.read_schema(path)
    assert schema.names == list(mf.MANIFEST_SCHEMA)
    assert [schema.field(n).type for n in schema.names] == list(mf.MANIFEST_SCHEMA.values())
    back = mf.read_manifest(tmp_path)
    assert back["n_slices"].tolist() == [1, 5] and back["severity"].isna().tolist() == [True, False]


def test_empty_manifest_round_trips(tmp_path):
    mf.write_manifest(mf.empty_table(mf.MANIFEST_SCHEMA), tmp_path / "manifest.parquet")
    assert list(mf.read_manifest(tmp_path).columns) == list(mf.MANIFEST_SCHEMA)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (lambda d: d.drop(columns=["label"]), "label"),
        (lambda d: d.assign(extra_col=1), "extra_col"),
        (lambda d: d.assign(rows=["a", "b"]), "rows"),
        (lambda d: d.assign(label=["covid19", "cancer"]), "label"),
        (lambda d: d.assign(kind=["xray", "mri"]), "kind"),
        (lambda d: d.assign(patient_id=["p-0000000000000000", "Smith"]), "patient_id"),
        (lambda d: d.assign(record_id=["r-0000000000000000"] * 2), "record_id"),
        (lambda d: d.assign(severity=[0.5, 1.5]), "severity"),
        (lambda d: d.assign(PatientName=["x", "y"]), "PatientName"),
        (lambda d: d.assign(study_date=["x", "y"]), "study_date"),
    ],
)
def test_schema_errors_name_the_column(tmp_path, change, column):
    df = change(pd.DataFrame([_row(0), _row(1)]))
    with pytest.raises(mf.SchemaError) as err:
        mf.write_manifest(df, tmp_path / "manifest.parquet")
    assert err.value.column == column
    assert column in str(err.value)
    assert isinstance(err.value, DataError)
    assert not (tmp_path / "manifest.parquet").exists()


def test_forbidden_columns_match_any_spelling():
    assert mf.forbidden_columns(["Patient Name", "patient_id", "StudyDate", "orig_patient_id", "label"]) == [
        "Patient Name", "StudyDate", "orig_patient_id"]


def test_failed_write_leaves_existing_file_intact(tmp_path):
    path = tmp_path / "manifest.parquet"
    mf.write_manifest(pd.DataFrame([_row(0)]), path)
    before = path.read_bytes()
    with pytest.raises(mf.SchemaError):
        mf.write_manifest(pd.DataFrame([_row(1, label="bogus")]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]  # no temp files left


def test_read_missing_manifest_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        mf.read_manifest(tmp_path)


def test_other_tables_check_reader_names(tmp_path):
    ok = pd.DataFrame([{"record_id": "r-0000000000000000", "reader": "Rad-5th", "read": 1}])
    mf.write_table(ok, tmp_path / "reads.parquet", mf.READS_SCHEMA)
    bad = ok.assign(reader="Dr Who")
    with pytest.raises(mf.SchemaError) as err:
        mf.write_table(bad, tmp_path / "reads.parquet", mf.READS_SCHEMA)
    assert err.value.column == "reader"
