"""Ingest: every configured source -> de-identified arrays and the ingest tables (one schema).

For each :class:`~covidscan.config.SourceSpec` the adapter lists its records; for each record, ingest

1. derives the pseudonyms (record, patient, study) from the salt; the raw keys are never stored or
   logged (original paths can hold patient names, so logs name records by ``record_id`` only);
2. for DICOM, reads the header (no pixels), quarantines a file declaring BurnedInAnnotation = YES
   (pseudonymous ids and the reason only), de-identifies the header (PS3.15 Basic Profile) and keeps
   only the technical whitelist;
3. loads the array, checks its kind's dtype and rank, and writes it as ``arrays/<h[:2]>/<h>.npy``
   where ``h`` is the SHA-256 of the ``.npy`` bytes (``content_sha256``): names carry nothing but
   content, identical arrays share one file, and every file is written atomically;
4. quarantines, instead of losing or guessing, every row whose data is bad: rows the adapter rejects
   (file missing, unknown label text) and records whose file turns out empty, truncated, not an
   image/DICOM or undecodable; ``quarantine.parquet`` holds the pseudonyms, the source, the row number
   in the source's table and the reason, and the run summary counts them per source and reason;
5. fails with :class:`NoUsableRecordsError` (naming the source and summarising the reasons) when a
   source yields no usable record at all, before any table is written, so an earlier run's tables
   stay as they were;
6. merges the annotation platform's export when ``data.annotations`` names one
   (:mod:`covidscan.data.annotation_export`: its boxes and reads replace the sources' for its records);
7. writes ``manifest.parquet``, ``clinical.parquet``, ``annotations.parquet``, ``reads.parquet``,
   ``quarantine.parquet`` and ``summary.parquet`` (counts per source x modality x label x centre),
   each checked against its schema in :mod:`covidscan.data.manifest` and written atomically, and
   ``report.json`` (per source: ingested, quarantined per reason, skipped, labels by default), then
   removes arrays no row refers to (left over from earlier runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import track

from covidscan.config import DataConfig, SourceSpec
from covidscan.data import annotation_export
from covidscan.data import manifest as mf
from covidscan.data.dicom.errors import (
    EmptyFileError,
    FileTooLargeError,
    ImageTooLargeError as DicomImageTooLargeError,
    NotDicomError,
    TruncatedError,
)
from covidscan.data.deid import (
    TECHNICAL_FIELDS,
    deidentify,
    is_burned_in,
    load_salt,
    pseudonym,
    quiet_header_values,
    technical_meta,
)
from covidscan.data.sources import Loaded, Record, SourceAdapter, get_adapter
from covidscan.data.sources.image_files import (
    EmptyImageError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UndecodableImageError,
)
from covidscan.errors import DataError

log = logging.getLogger(__name__)

ARRAYS_DIR = "arrays"
REPORT_FILE = "report.json"
_KIND_SPEC = {"xray": (np.float32, 2), "ct_slice2d": (np.float32, 2), "ct_volume": (np.int16, 3)}


@dataclass
class IngestSummary:
    """What one ingest run produced.

    Args:
        out_dir: the ingest folder.
        n_records: rows in the manifest.
        n_quarantined: rows held back in ``quarantine.parquet`` (missing or unreadable file, unknown
            label, burned-in annotation, unexpected shape).
        skipped: per source, records a documented filter left out and why (view, modality, split,
            duplicate entry, ``max_records``).
        quarantined: per source, quarantined rows per reason (``missing_file``, ``truncated``,
            ``unknown label 'Tuberculosis'``, ...).
        defaulted: per source, labels taken from a documented default rather than the row's own text
            (e.g. ``non_covid_label=normal``), per default.
        ingested: per source, records written to the manifest.
        per_source: the summary table (source, modality, label, centre, n_records, n_patients).
        manifest_sha256: digest of manifest.parquet (what the integrator logs as the dataset input).
        annotations: what ``data.annotations`` (the annotation platform's export) brought: cases,
            boxes, reads, unknown_record_ids; empty without one.
    """

    out_dir: Path
    n_records: int
    n_quarantined: int
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)
    defaulted: dict[str, dict[str, int]] = field(default_factory=dict)
    ingested: dict[str, int] = field(default_factory=dict)
    per_source: pd.DataFrame = field(default_factory=lambda: mf.empty_table(mf.SUMMARY_SCHEMA))
    manifest_sha256: str = ""
    annotations: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """Per source: records ingested, quarantined per reason, skipped per filter, labels by default
        (what ``report.json`` in the ingest folder holds)."""
        names = list(self.ingested) or list(self.skipped)
        return {"sources": {name: {"ingested": self.ingested.get(name, 0),
                                   "quarantined": self.quarantined.get(name, {}),
                                   "skipped": self.skipped.get(name, {}),
                                   "defaulted": self.defaulted.get(name, {})} for name in names},
                "n_records": self.n_records, "n_quarantined": self.n_quarantined,
                **({"annotations": self.annotations} if self.annotations else {})}


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` serialisation of an array (no pickle): deterministic for equal arrays."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_array(array: np.ndarray, out_dir: Path) -> tuple[str, str]:
    """Write ``array`` under ``out_dir/arrays/`` with a content-hashed name.

    Returns:
        (path relative to ``out_dir``, SHA-256 of the file's bytes). An existing file with that name
        already holds these bytes and is left untouched.
    """
    data = npy_bytes(array)
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{ARRAYS_DIR}/{digest[:2]}/{digest}.npy"
    target = out_dir / rel
    if not target.is_file() or target.stat().st_size != len(data):
        mf.atomic_write_bytes(target, data)
    return rel, digest


class ArrayShapeError(DataError):
    """A loaded array does not have its kind's rank (e.g. a multi-frame file listed as an X-ray)."""


class NoUsableRecordsError(DataError):
    """A source yields no usable record; the message names it and counts the reasons."""


# Quarantine reasons for the errors a record's header reader or loader raises (first match wins);
# any other DataError/OSError/ValueError is ``unreadable`` (``unreadable_header`` for the header).
_ERROR_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ArrayShapeError, "unexpected_shape"),
    (EmptyFileError, "empty_file"),
    (EmptyImageError, "empty_file"),
    (TruncatedError, "truncated"),
    (TruncatedImageError, "truncated"),
    (NotDicomError, "not_dicom"),
    (NotAnImageError, "not_an_image"),
    (UndecodableImageError, "undecodable_image"),
    (FileTooLargeError, "too_large"),
    (DicomImageTooLargeError, "too_large"),
    (ImageTooLargeError, "too_large"),
)


def quarantine_reason(err: BaseException, default: str = "unreadable") -> str:
    """The quarantine reason for an error raised while reading a record."""
    return next((reason for cls, reason in _ERROR_REASONS if isinstance(err, cls)), default)


def _check_array(loaded: Loaded, kind: str) -> np.ndarray:
    dtype, ndim = _KIND_SPEC[kind]
    arr = np.asarray(loaded.array)
    if arr.ndim != ndim or min(arr.shape) < 1:
        raise ArrayShapeError(f"{kind} array must have {ndim} dimensions, got shape {arr.shape}")
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


def _nan_or(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) and out > 0 else math.nan


class _Tables:
    """Rows collected during a run, turned into the checked tables at the end."""

    def __init__(self) -> None:
        self.manifest: list[dict[str, Any]] = []
        self.clinical: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.reads: list[dict[str, Any]] = []
        self.quarantine: list[dict[str, Any]] = []

    def frame(self, rows: list[dict[str, Any]], schema: dict) -> pd.DataFrame:
        if not rows:
            return mf.empty_table(schema)
        return pd.DataFrame(rows, columns=list(schema))


def _ingest_record(rec: Record, spec: SourceSpec, origin_default: str, salt: bytes, quarantine_burned_in: bool,
                   out_dir: Path, tables: _Tables) -> str:
    """Ingest one record; returns 'ok' or the quarantine reason (the row is then in ``tables.quarantine``)."""
    record_id = pseudonym(f"{spec.name}\x1f{rec.key}", salt, "record")
    source = rec.source or spec.name
    header = None
    header_meta: dict[str, Any] = {}
    if rec.header is not None:
        try:
            header = rec.header()
        except (DataError, OSError, ValueError) as err:
            reason = quarantine_reason(err, "unreadable_header")
            log.warning("record %s: header unreadable (%s); quarantined as %s", record_id, type(err).__name__, reason)
            tables.quarantine.append({"record_id": record_id, "patient_id": "", "source": source, "row": rec.row,
                                      "reason": reason})
            return reason
    patient_key = rec.patient_key
    study_key = rec.study_key
    if header is not None:
        patient_key = patient_key or str(header.get("PatientID", "") or "").strip() or None
        study_key = study_key or str(header.get("StudyInstanceUID", "") or "").strip() or None
    if not patient_key:
        log.warning("record %s: no patient identity in the source; the record is its own patient", record_id)
        patient_key = f"record\x1f{rec.key}"
    patient_id = pseudonym(f"{spec.name}\x1f{patient_key}", salt, "patient")
    study_id = pseudonym(f"{spec.name}\x1f{study_key or patient_key}", salt, "study")

    def hold(reason: str) -> str:
        tables.quarantine.append({"record_id": record_id, "patient_id": patient_id, "source": source, "row": rec.row,
                                  "reason": reason})
        return reason

    if header is not None:
        if quarantine_burned_in and is_burned_in(header):
            log.info("record %s: BurnedInAnnotation=YES; quarantined", record_id)
            return hold("burned_in_annotation")
        header_meta = technical_meta(deidentify(header, salt))
    try:
        loaded = rec.load()
        array = _check_array(loaded, rec.kind)
    except (DataError, OSError, ValueError, RuntimeError, MemoryError) as err:
        reason = quarantine_reason(err)
        log.warning("record %s: not ingested (%s); quarantined as %s", record_id, type(err).__name__, reason)
        return hold(reason)
    rel, digest = write_array(array, out_dir)
    meta = {**header_meta, **{k: v for k, v in loaded.meta.items() if k in TECHNICAL_FIELDS}}
    spacing = loaded.spacing
    if rec.kind != "ct_volume":
        rows, cols, n_slices = int(array.shape[0]), int(array.shape[1]), 1
    else:
        n_slices, rows, cols = (int(s) for s in array.shape)
    tables.manifest.append({
        "record_id": record_id, "patient_id": patient_id, "study_id": study_id, "modality": rec.modality,
        "kind": rec.kind, "label": rec.label, "source": source, "centre": rec.centre or spec.centre or source,
        "origin": rec.origin or origin_default, "array_path": rel, "rows": rows, "cols": cols, "n_slices": n_slices,
        "spacing_row": _nan_or(spacing[1]), "spacing_col": _nan_or(spacing[2]),
        "spacing_slice": _nan_or(spacing[0]) if rec.kind == "ct_volume" else math.nan,
        "manufacturer": str(meta.get("Manufacturer", "") or ""), "transfer_syntax": str(meta.get("TransferSyntaxUID", "") or ""),
        "photometric": str(meta.get("PhotometricInterpretation", "") or ""), "rtpcr_initial": rec.rtpcr_initial,
        "severity": float(rec.severity), "content_sha256": digest,
    })
    if rec.clinical:
        tables.clinical.append({"record_id": record_id, "patient_id": patient_id, **rec.clinical})
    for a in rec.annotations:
        tables.annotations.append({"record_id": record_id, **{k: a[k] for k in ("reader", "slice_index", "x0", "y0", "x1", "y1")}})
    for r in rec.reads:
        tables.reads.append({"record_id": record_id, "reader": r["reader"], "read": r["read"]})
    log.debug("record %s: %s %s %s", record_id, rec.kind, rec.label, "x".join(str(s) for s in array.shape))
    return "ok"


def _quarantine_rejected(adapter: SourceAdapter, spec: SourceSpec, salt: bytes, tables: _Tables) -> Counter[str]:
    """The rows the adapter rejected (missing file, unknown label) -> quarantine rows; counts per reason."""
    counts: Counter[str] = Counter()
    for rej in adapter.rejected:
        record_id = pseudonym(f"{spec.name}\x1f{rej.key}", salt, "record")
        patient_id = pseudonym(f"{spec.name}\x1f{rej.patient_key}", salt, "patient") if rej.patient_key else ""
        tables.quarantine.append({"record_id": record_id, "patient_id": patient_id, "source": rej.source or spec.name,
                                  "row": rej.row,
                                  "reason": rej.reason})
        log.debug("record %s (row %d): quarantined: %s", record_id, rej.row, rej.reason)
        counts[rej.reason] += 1
    return counts


def _no_usable_records(spec: SourceSpec, quarantined: Counter[str], skipped: Counter[str]) -> NoUsableRecordsError:
    def listing(counts: Counter[str]) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in counts.most_common()) or "none"

    total = sum(quarantined.values()) + sum(skipped.values())
    return NoUsableRecordsError(
        f"data.sources[{spec.name}] ({spec.adapter} at {spec.location}): no usable record among {total} rows; "
        f"quarantined: {listing(quarantined)}; skipped: {listing(skipped)}. "
        f"Fix the files or labels (a label_map option maps label text), or remove the source"
    )


def summarise(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts of records and patients per source x modality x label x centre."""
    if manifest.empty:
        return mf.empty_table(mf.SUMMARY_SCHEMA)
    keys = ["source", "modality", "label", "centre"]
    out = manifest.groupby(keys, sort=True).agg(n_records=("record_id", "size"), n_patients=("patient_id", "nunique"))
    return out.reset_index()[list(mf.SUMMARY_SCHEMA)]


def _prune(out_dir: Path, keep: set[str]) -> int:
    removed = 0
    for path in (out_dir / ARRAYS_DIR).glob("*/*.npy"):
        if path.relative_to(out_dir).as_posix() not in keep:
            path.unlink()
            removed += 1
    return removed


def ingest(sources: list[SourceSpec], data_cfg: DataConfig, out_dir: str | Path, *, salt: bytes | None = None,
           progress: bool = True) -> IngestSummary:
    """Ingest every source into ``out_dir`` (arrays + the ingest tables).

    Args:
        sources: the sources to read (normally ``params.data.sources``).
        data_cfg: the ``data`` section (DICOM limits, de-identification).
        out_dir: the ingest folder (``data/interim/ingest``); created if needed.
        salt: the pseudonymisation salt; default :func:`~covidscan.data.deid.load_salt`.
        progress: show a rich progress bar per source (on stderr).

    Returns:
        An :class:`IngestSummary`.

    Raises:
        ConfigError: no salt, an unknown adapter or option.
        DataError: a source location or its tables are missing or malformed; two sources share a name.
        NoUsableRecordsError: (a DataError) a source yields no usable record; nothing is written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"data.sources: source name '{dup[0]}' is used twice; names must be unique")
    salt = salt if salt is not None else load_salt(data_cfg.deid)
    tables = _Tables()
    skipped: dict[str, dict[str, int]] = {}
    quarantined: dict[str, dict[str, int]] = {}
    defaulted: dict[str, dict[str, int]] = {}
    ingested: dict[str, int] = {}
    console = Console(stderr=True)
    for spec in sources:
        adapter = get_adapter(spec.adapter)(spec, data_cfg.dicom)
        records = adapter.records()
        seen: set[str] = set()
        unique = []
        for rec in records:
            if rec.key in seen:
                adapter.skipped["duplicate_entry"] += 1
                continue
            seen.add(rec.key)
            unique.append(rec)
        if spec.max_records is not None:
            adapter.skipped["over_max_records"] += max(0, len(unique) - spec.max_records)
            unique = unique[: spec.max_records]
        outcomes: Counter[str] = _quarantine_rejected(adapter, spec, salt, tables)
        for rec in track(unique, description=f"ingest {spec.name}", disable=not progress, console=console, transient=True):
            with quiet_header_values():
                outcome = _ingest_record(rec, spec, adapter.origin, salt, data_cfg.deid.quarantine_burned_in, out_dir, tables)
            outcomes[outcome] += 1
        n_ok = outcomes.pop("ok", 0)
        skipped[spec.name] = dict(adapter.skipped)
        quarantined[spec.name] = dict(outcomes.most_common())
        defaulted[spec.name] = dict(adapter.defaulted)
        ingested[spec.name] = n_ok
        log.info("source %s (%s): %d ingested; %d quarantined%s; skipped %s; labels by default %s", spec.name,
                 spec.adapter, n_ok, sum(outcomes.values()), f" {quarantined[spec.name]}" if outcomes else "",
                 dict(adapter.skipped) or "none", dict(adapter.defaulted) or "none")
        if n_ok == 0:
            raise _no_usable_records(spec, outcomes, adapter.skipped)
    annotation_counts: dict[str, int] = {}
    if data_cfg.annotations:
        tables.annotations, tables.reads, annotation_counts = annotation_export.merge(
            Path(data_cfg.annotations).expanduser(), {r["record_id"] for r in tables.manifest}, tables.annotations, tables.reads)
        log.info("data.annotations: the platform's export for %d cases (%d boxes, %d reads) replaces the sources' rows",
                 annotation_counts["cases"], annotation_counts["boxes"], annotation_counts["reads"])
    manifest = tables.frame(tables.manifest, mf.MANIFEST_SCHEMA)
    mf.write_manifest(manifest, out_dir / mf.MANIFEST_FILE)
    mf.write_table(tables.frame(tables.clinical, mf.CLINICAL_SCHEMA), out_dir / mf.CLINICAL_FILE, mf.CLINICAL_SCHEMA)
    mf.write_table(tables.frame(tables.annotations, mf.ANNOTATIONS_SCHEMA), out_dir / mf.ANNOTATIONS_FILE, mf.ANNOTATIONS_SCHEMA)
    mf.write_table(tables.frame(tables.reads, mf.READS_SCHEMA), out_dir / mf.READS_FILE, mf.READS_SCHEMA)
    mf.write_table(tables.frame(tables.quarantine, mf.QUARANTINE_SCHEMA), out_dir / mf.QUARANTINE_FILE, mf.QUARANTINE_SCHEMA)
    summary = summarise(manifest)
    mf.write_table(summary, out_dir / mf.SUMMARY_FILE, mf.SUMMARY_SCHEMA)
    removed = _prune(out_dir, set(manifest["array_path"]))
    if removed:
        log.info("removed %d arrays no record refers to any more", removed)
    digest = hashlib.sha256((out_dir / mf.MANIFEST_FILE).read_bytes()).hexdigest()
    log.info("ingest: %d records, %d quarantined -> %s", len(manifest), len(tables.quarantine), out_dir)
    result = IngestSummary(out_dir=out_dir, n_records=len(manifest), n_quarantined=len(tables.quarantine), skipped=skipped,
                           quarantined=quarantined, defaulted=defaulted, ingested=ingested, per_source=summary,
                           manifest_sha256=digest, annotations=annotation_counts)
    mf.atomic_write_bytes(out_dir / REPORT_FILE, (json.dumps(result.report(), indent=2, sort_keys=True) + "\n").encode())
    return result
