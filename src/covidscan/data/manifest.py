"""The ingest tables: schemas, atomic parquet writing, and the checks every reader can rely on.

One schema per table (``manifest``, ``clinical``, ``annotations``, ``reads``, ``quarantine``,
``summary``), as ordered ``column -> pyarrow type`` mappings. :func:`write_table` checks a frame
against its schema (typed :class:`SchemaError` naming the column), refuses identifying column names
(:data:`FORBIDDEN_COLUMNS`), and writes through a temporary file in the same folder followed by an
atomic rename, so a reader never sees a half-written file.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from covidscan.errors import DataError

MANIFEST_FILE = "manifest.parquet"
CLINICAL_FILE = "clinical.parquet"
ANNOTATIONS_FILE = "annotations.parquet"
READS_FILE = "reads.parquet"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "summary.parquet"

MODALITIES = ("xray", "ct")
KINDS = ("xray", "ct_volume", "ct_slice2d")
LABELS = ("normal", "pneumonia", "covid19", "influenza")
ORIGINS = ("public", "hospital")
RTPCR = ("positive", "negative", "")
ANNOTATION_READERS = ("reader1", "reader2", "adjudicated")
EXPERT_READERS = ("Respira.", "Emerg.", "Intern", "Rad-5th", "Rad-3rd")

MANIFEST_SCHEMA: dict[str, pa.DataType] = {
    "record_id": pa.string(),
    "patient_id": pa.string(),
    "study_id": pa.string(),
    "modality": pa.string(),
    "kind": pa.string(),
    "label": pa.string(),
    "source": pa.string(),
    "centre": pa.string(),
    "origin": pa.string(),
    "array_path": pa.string(),
    "rows": pa.int64(),
    "cols": pa.int64(),
    "n_slices": pa.int64(),
    "spacing_row": pa.float64(),
    "spacing_col": pa.float64(),
    "spacing_slice": pa.float64(),
    "manufacturer": pa.string(),
    "transfer_syntax": pa.string(),
    "photometric": pa.string(),
    "rtpcr_initial": pa.string(),
    "severity": pa.float64(),
    "content_sha256": pa.string(),
}
CLINICAL_SCHEMA: dict[str, pa.DataType] = {
    "record_id": pa.string(),
    "patient_id": pa.string(),
    "wbc": pa.float64(),
    "neutrophil_pct": pa.float64(),
    "lymphocyte_pct": pa.float64(),
    "procalcitonin": pa.float64(),
    "crp": pa.float64(),
}
ANNOTATIONS_SCHEMA: dict[str, pa.DataType] = {
    "record_id": pa.string(),
    "reader": pa.string(),
    "slice_index": pa.int64(),
    "x0": pa.float64(),
    "y0": pa.float64(),
    "x1": pa.float64(),
    "y1": pa.float64(),
}
READS_SCHEMA: dict[str, pa.DataType] = {
    "record_id": pa.string(),
    "reader": pa.string(),
    "read": pa.int64(),
}
QUARANTINE_SCHEMA: dict[str, pa.DataType] = {
    "record_id": pa.string(),
    "patient_id": pa.string(),
    "source": pa.string(),
    "row": pa.int64(),
    "reason": pa.string(),
}
SUMMARY_SCHEMA: dict[str, pa.DataType] = {
    "source": pa.string(),
    "modality": pa.string(),
    "label": pa.string(),
    "centre": pa.string(),
    "n_records": pa.int64(),
    "n_patients": pa.int64(),
}
SCHEMAS: dict[str, dict[str, pa.DataType]] = {
    MANIFEST_FILE: MANIFEST_SCHEMA,
    CLINICAL_FILE: CLINICAL_SCHEMA,
    ANNOTATIONS_FILE: ANNOTATIONS_SCHEMA,
    READS_FILE: READS_SCHEMA,
    QUARANTINE_FILE: QUARANTINE_SCHEMA,
    SUMMARY_FILE: SUMMARY_SCHEMA,
}

# Column names that would carry identifying data. Compared after lower-casing and removing
# non-letters, so "Patient Name", "patient_name" and "PatientName" all match. (The DICOM StudyID is
# not listed: it would match our pseudonymous study_id, whose format check guards it instead.)
FORBIDDEN_COLUMNS: tuple[str, ...] = (
    "patientname", "name", "firstname", "lastname", "surname", "givenname", "othername",
    "patientbirthdate", "birthdate", "dob", "dateofbirth", "birthtime", "age", "patientage", "sex",
    "patientsex", "patientaddress", "address", "phone", "telephone", "email", "mrn",
    "medicalrecordnumber", "originalpatientid", "origpatientid", "otherpatientids", "accessionnumber",
    "studydate", "seriesdate", "acquisitiondate", "contentdate", "studytime", "date", "datetime",
    "institutionname", "institution", "institutionaddress", "hospital", "referringphysicianname",
    "performingphysicianname", "physician", "operatorsname", "operator", "stationname",
    "deviceserialnumber", "serialnumber", "studyinstanceuid", "seriesinstanceuid", "sopinstanceuid",
    "uid", "path", "filename", "file", "originalpath", "sourcepath", "url", "doi",
)
_FORBIDDEN = frozenset(FORBIDDEN_COLUMNS)
_PSEUDONYM = {"patient_id": re.compile(r"^p-[0-9a-f]{16}$"), "study_id": re.compile(r"^s-[0-9a-f]{16}$"),
              "record_id": re.compile(r"^r-[0-9a-f]{16}$")}
_ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "modality": MODALITIES, "kind": KINDS, "label": LABELS, "origin": ORIGINS, "rtpcr_initial": RTPCR,
}


class SchemaError(DataError):
    """A table does not match its schema; ``column`` names the offending column."""

    def __init__(self, message: str, column: str | None = None, table: str | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.table = table


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def forbidden_columns(columns: list[str] | pd.Index) -> list[str]:
    """The column names among ``columns`` that look identifying (:data:`FORBIDDEN_COLUMNS`)."""
    return [c for c in columns if _normalise(str(c)) in _FORBIDDEN]


def empty_table(schema: Mapping[str, pa.DataType]) -> pd.DataFrame:
    """An empty frame with the schema's columns and dtypes."""
    return pa.schema(list(schema.items())).empty_table().to_pandas()


def check_table(df: pd.DataFrame, schema: Mapping[str, pa.DataType], table: str = "table") -> pa.Table:
    """Check ``df`` against ``schema`` and return it as an Arrow table with exactly that schema.

    Raises:
        SchemaError: a forbidden (identifying) column, a missing or extra column, a value that cannot
            take the column's type, a wrong pseudonym format, a value outside its allowed set, or a
            duplicated ``record_id`` in the manifest. The error's ``column`` names the column.
    """
    bad = forbidden_columns(list(df.columns))
    if bad:
        raise SchemaError(f"{table}: column '{bad[0]}' looks identifying and is forbidden", column=bad[0], table=table)
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(f"{table}: missing column '{missing[0]}' (expected columns: {', '.join(schema)})",
                          column=missing[0], table=table)
    extra = [c for c in df.columns if c not in schema]
    if extra:
        raise SchemaError(f"{table}: unexpected column '{extra[0]}'", column=extra[0], table=table)
    arrays = []
    for name, typ in schema.items():
        col = df[name]
        try:
            if pa.types.is_string(typ):
                if col.isna().any():
                    raise ValueError("missing values (use '' for unknown)")
                values = [str(v) if isinstance(v, str) else _reject(v) for v in col.tolist()]
                arr = pa.array(values, type=typ)
            elif pa.types.is_integer(typ):
                if col.isna().any():
                    raise ValueError("missing values")
                values = col.tolist()
                if any(isinstance(v, float) and not float(v).is_integer() for v in values):
                    raise ValueError("non-integer values")
                arr = pa.array([int(v) for v in values], type=typ)
            else:
                arr = pa.array([float("nan") if v is None else float(v) for v in col.tolist()], type=typ)
        except (TypeError, ValueError, pa.ArrowInvalid) as err:
            raise SchemaError(f"{table}: column '{name}' cannot be {typ}: {err}", column=name, table=table) from None
        arrays.append(arr)
        if name in _PSEUDONYM and len(col):
            pattern = _PSEUDONYM[name]
            wrong = [v for v in col.tolist() if not pattern.match(v) and not (v == "" and schema is QUARANTINE_SCHEMA)]
            if wrong:
                raise SchemaError(f"{table}: column '{name}' must hold pseudonyms like {pattern.pattern}; "
                                  f"{len(wrong)} values do not", column=name, table=table)
        if name in _ALLOWED_VALUES and schema is MANIFEST_SCHEMA:
            unknown = sorted(set(col.tolist()) - set(_ALLOWED_VALUES[name]))
            if unknown:
                raise SchemaError(f"{table}: column '{name}' has values {unknown} outside {list(_ALLOWED_VALUES[name])}",
                                  column=name, table=table)
    if schema is MANIFEST_SCHEMA:
        dup = df["record_id"].duplicated()
        if dup.any():
            raise SchemaError(f"{table}: column 'record_id' has {int(dup.sum())} duplicated values",
                              column="record_id", table=table)
        sev = df["severity"].dropna()
        if ((sev < 0) | (sev > 1)).any():
            raise SchemaError(f"{table}: column 'severity' must be in [0, 1] or NaN", column="severity", table=table)
    if schema is ANNOTATIONS_SCHEMA and len(df):
        unknown = sorted(set(df["reader"]) - set(ANNOTATION_READERS))
        if unknown:
            raise SchemaError(f"{table}: column 'reader' has values {unknown} outside {list(ANNOTATION_READERS)}",
                              column="reader", table=table)
    if schema is READS_SCHEMA and len(df):
        unknown = sorted(set(df["reader"]) - set(EXPERT_READERS))
        if unknown:
            raise SchemaError(f"{table}: column 'reader' has values {unknown} outside {list(EXPERT_READERS)}",
                              column="reader", table=table)
        if not set(df["read"].astype(int)) <= {0, 1}:
            raise SchemaError(f"{table}: column 'read' must be 0 or 1", column="read", table=table)
    return pa.Table.from_arrays(arrays, schema=pa.schema(list(schema.items())))


def _reject(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("missing values (use '' for unknown)")
    raise TypeError(f"non-string value of type {type(value).__name__}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_table(df: pd.DataFrame, path: str | Path, schema: Mapping[str, pa.DataType], table: str | None = None) -> Path:
    """Check ``df`` against ``schema`` and write it as parquet, atomically.

    Args:
        df: the frame (column order does not matter; the schema's order is written).
        path: the parquet file.
        schema: one of the ``*_SCHEMA`` mappings.
        table: name used in error messages (default: the file name).
    """
    path = Path(path)
    arrow = check_table(df, schema, table or path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        pq.write_table(arrow, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_table(path: str | Path, schema: Mapping[str, pa.DataType], table: str | None = None) -> pd.DataFrame:
    """Read a parquet table and check it against ``schema``.

    Raises:
        DataError: the file is missing or unreadable.
        SchemaError: it does not match the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (run the ingest stage first)")
    try:
        df = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    check_table(df, schema, table or path.name)
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest (checked against :data:`MANIFEST_SCHEMA`) atomically."""
    return write_table(df, path, MANIFEST_SCHEMA, table="manifest")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and check a manifest; ``path`` is the parquet file or the ingest folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    return read_table(path, MANIFEST_SCHEMA, table="manifest")
