"""The expectation suites, defined in code (Great Expectations 1.x).

Each builder returns a :class:`Check`: the table to validate, the suite, and the columns that name a
row in the report (e.g. ``record_id``). Every expectation carries a ``description`` in plain words;
the report and the data docs show it.

Suites (five kinds):
  1. ``manifest.columns`` + ``manifest``: schema, allowed values, unique ids, pseudonyms, no
     identifying columns, every array file present.
  2. ``images.<kind>``: statistics computed from the stored arrays (dtype, shape, spacing, value
     range; CT in the physical Hounsfield range).
  3. ``clinical``: the five indicators' ranges and missing values.
  4. ``annotations`` (+ ``reads``): boxes inside the image, sides 16-64 px at 512x512 scale.
  5. ``splits.*``: no patient and no near-duplicate group in two parts or two folds, per sub-dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import great_expectations as gx
import pandas as pd

from covidscan.config import CLASSES, ValidationConfig
from covidscan.validation.tables import (
    ANNOTATION_COLUMNS,
    ANNOTATION_READERS,
    CLINICAL_COLUMNS,
    CLINICAL_INDICATORS,
    EXPERT_READERS,
    KIND_DTYPE,
    KIND_NDIM,
    MANIFEST_COLUMNS,
    MODALITY_KINDS,
    READS_COLUMNS,
    SplitTables,
    normalise_column_name,
)

E = gx.expectations


@dataclass
class Check:
    """One suite and the table it runs on."""

    name: str
    frame: pd.DataFrame
    expectations: list[gx.expectations.Expectation] = field(default_factory=list)
    index_columns: list[str] = field(default_factory=list)

    def add(self, expectation: gx.expectations.Expectation) -> None:
        self.expectations.append(expectation)


def manifest_columns_check(manifest: pd.DataFrame, cfg: ValidationConfig, columns: pd.DataFrame) -> Check:
    """The manifest's columns: none identifying, none outside the schema, none missing."""
    check = Check("manifest.columns", columns, index_columns=["column"])
    forbidden = sorted({normalise_column_name(c) for c in cfg.forbidden_columns})
    check.add(E.ExpectColumnValuesToNotBeInSet(
        column="normalised", value_set=forbidden,
        description="no identifying column (names, dates, institution, accession, UIDs ...) in the manifest",
    ))  # fmt: skip
    check.add(E.ExpectColumnValuesToBeInSet(
        column="column", value_set=list(MANIFEST_COLUMNS), description="every manifest column is in the schema",
    ))  # fmt: skip
    check.add(E.ExpectColumnDistinctValuesToContainSet(
        column="column", value_set=list(MANIFEST_COLUMNS), description="every schema column is in the manifest",
    ))  # fmt: skip
    return check


def manifest_check(manifest: pd.DataFrame, cfg: ValidationConfig) -> Check:
    """Row-level checks of the manifest (only on the schema columns it has)."""
    # GE takes the naming columns per checkpoint, not per expectation: array_path names the missing files
    check = Check("manifest", manifest, index_columns=[c for c in ("record_id", "array_path") if c in manifest])
    has = set(manifest.columns)

    def add(column: str, expectation: gx.expectations.Expectation) -> None:
        if column in has:
            check.add(expectation)

    add("record_id", E.ExpectColumnValuesToNotBeNull(column="record_id", description="record_id is set"))
    add("record_id", E.ExpectColumnValuesToBeUnique(column="record_id", description="record_id is unique"))
    for col, regex in (("patient_id", cfg.patient_id_regex), ("study_id", cfg.study_id_regex)):
        add(f"{col}_pseudonymised", E.ExpectColumnValuesToBeInSet(
            column=f"{col}_pseudonymised", value_set=[True],
            description=f"{col} is a salted pseudonym matching {regex} (the value is not shown)",
        ))  # fmt: skip
    add("label", E.ExpectColumnValuesToBeInSet(column="label", value_set=list(CLASSES), description="label is a known class"))
    add("modality", E.ExpectColumnValuesToBeInSet(column="modality", value_set=["xray", "ct"], description="modality is xray or ct"))
    add("kind", E.ExpectColumnValuesToBeInSet(
        column="kind", value_set=sorted({k for _, k in MODALITY_KINDS}), description="kind is a known record kind",
    ))  # fmt: skip
    if {"modality", "kind"} <= has:
        check.add(E.ExpectColumnPairValuesToBeInSet(
            column_A="modality", column_B="kind", value_pairs_set=[list(p) for p in MODALITY_KINDS],
            description="kind matches modality (xray/xray, ct/ct_volume, ct/ct_slice2d)",
        ))  # fmt: skip
    add("origin", E.ExpectColumnValuesToBeInSet(column="origin", value_set=["public", "hospital"], description="origin is public or hospital"))
    if cfg.allowed_sources is not None:
        add("source", E.ExpectColumnValuesToBeInSet(column="source", value_set=list(cfg.allowed_sources), description="source is an allowed source"))
    else:
        add("source", E.ExpectColumnValuesToMatchRegex(column="source", regex=cfg.source_regex, description="source is a plain source name"))
    add("centre", E.ExpectColumnValuesToNotBeNull(column="centre", description="centre is set"))
    add("array_path", E.ExpectColumnValuesToNotBeNull(column="array_path", description="array_path is set"))
    add("array_present", E.ExpectColumnValuesToBeInSet(
        column="array_present", value_set=[True],
        description="the array file exists under the ingest folder (relative path, no '..')",
    ))  # fmt: skip
    for col in ("rows", "cols"):
        add(col, E.ExpectColumnValuesToBeBetween(
            column=col, min_value=cfg.image_min_size, max_value=cfg.image_max_size,
            description=f"{col} within [{cfg.image_min_size}, {cfg.image_max_size}]",
        ))  # fmt: skip
    add("n_slices", E.ExpectColumnValuesToBeBetween(column="n_slices", min_value=1, description="n_slices >= 1"))
    add("rtpcr_initial", E.ExpectColumnValuesToBeInSet(
        column="rtpcr_initial", value_set=["positive", "negative", ""], description="rtpcr_initial is positive, negative or empty",
    ))  # fmt: skip
    add("severity", E.ExpectColumnValuesToBeBetween(column="severity", min_value=0, max_value=1, description="severity in [0, 1] (or unknown)"))
    add("content_sha256", E.ExpectColumnValuesToMatchRegex(
        column="content_sha256", regex=r"^[0-9a-f]{64}$", description="content_sha256 is a SHA-256 hex digest",
    ))  # fmt: skip
    return check


def image_check(kind: str, images: pd.DataFrame, cfg: ValidationConfig) -> Check:
    """Statistics of the stored arrays of one kind (``xray``, ``ct_volume`` or ``ct_slice2d``)."""
    check = Check(f"images.{kind}", images, index_columns=["record_id", "array_path"])
    check.add(E.ExpectColumnValuesToBeInSet(column="dtype", value_set=[KIND_DTYPE[kind]], description=f"{kind} arrays are {KIND_DTYPE[kind]}"))
    check.add(E.ExpectColumnValuesToBeInSet(column="ndim", value_set=[KIND_NDIM[kind]], description=f"{kind} arrays are {KIND_NDIM[kind]}D"))
    check.add(E.ExpectColumnValuesToBeInSet(
        column="shape_matches", value_set=[True], description="array shape equals the manifest's rows x cols (x n_slices)",
    ))  # fmt: skip
    check.add(E.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0, description="no NaN or infinite value"))
    check.add(E.ExpectColumnValuesToBeBetween(column="v_std", min_value=0, strict_min=True, description="the image is not constant"))
    lo, hi = cfg.pixel_spacing_mm
    for col in ("spacing_row", "spacing_col"):
        check.add(E.ExpectColumnValuesToBeBetween(
            column=col, min_value=lo, max_value=hi, description=f"{col} within [{lo}, {hi}] mm (when known)",
        ))  # fmt: skip
    if kind == "ct_volume":
        lo, hi = cfg.slice_spacing_mm
        check.add(E.ExpectColumnValuesToBeBetween(
            column="spacing_slice", min_value=lo, max_value=hi, description=f"CT slice spacing within [{lo}, {hi}] mm (when known)",
        ))  # fmt: skip
        q = cfg.ct_hu_quantile
        pad = f"padding <= {cfg.ct_padding_hu:g} HU excluded"
        check.add(E.ExpectColumnValuesToBeBetween(
            column="v_low", min_value=cfg.ct_hu_min,
            description=f"CT Hounsfield units within the physical range: {q:g}-quantile >= {cfg.ct_hu_min:g} HU ({pad})",
        ))  # fmt: skip
        check.add(E.ExpectColumnValuesToBeBetween(
            column="v_high", max_value=cfg.ct_hu_max,
            description=f"CT Hounsfield units within the physical range: {1 - q:g}-quantile <= {cfg.ct_hu_max:g} HU ({pad})",
        ))  # fmt: skip
        check.add(E.ExpectColumnValuesToBeBetween(
            column="padding_fraction", max_value=cfg.ct_max_padding_fraction,
            description=f"at most {cfg.ct_max_padding_fraction:.0%} of a CT volume is padding (<= {cfg.ct_padding_hu:g} HU)",
        ))  # fmt: skip
    return check


def clinical_check(clinical: pd.DataFrame, cfg: ValidationConfig) -> Check:
    """The five clinical indicators: schema, record link, ranges, missing values."""
    check = Check("clinical", clinical, index_columns=["record_id"] if "record_id" in clinical else [])
    computed = {"in_manifest", "patient_matches"}
    check.add(E.ExpectTableColumnsToMatchSet(
        column_set=list(CLINICAL_COLUMNS) + sorted(computed & set(clinical.columns)), exact_match=True,
        description="clinical.parquet has exactly record_id, patient_id and the five indicators (nothing identifying)",
    ))  # fmt: skip
    if "record_id" in clinical:
        check.add(E.ExpectColumnValuesToBeUnique(column="record_id", description="one clinical row per record"))
        check.add(E.ExpectColumnValuesToBeInSet(column="in_manifest", value_set=[True], description="the record is in the manifest"))
    if "patient_matches" in clinical:
        check.add(E.ExpectColumnValuesToBeInSet(
            column="patient_matches", value_set=[True], description="patient_id equals the manifest's for the record",
        ))  # fmt: skip
    for name in CLINICAL_INDICATORS:
        if name not in clinical:
            continue
        check.add(E.ExpectColumnValuesToNotBeNull(
            column=name, mostly=1.0 - cfg.clinical_max_missing,
            description=f"{name} missing in at most {cfg.clinical_max_missing:.0%} of cases",
        ))  # fmt: skip
        if name in cfg.clinical_ranges:  # an indicator without a configured range is not range-checked
            lo, hi = cfg.clinical_ranges[name]
            check.add(E.ExpectColumnValuesToBeBetween(column=name, min_value=lo, max_value=hi, description=f"{name} within [{lo}, {hi}]"))
    return check


def annotations_check(annotations: pd.DataFrame, cfg: ValidationConfig) -> Check:
    """Lesion boxes: reader, record link, inside the image, plausible size."""
    idx = [c for c in ANNOTATION_COLUMNS if c in annotations]
    check = Check("annotations", annotations, index_columns=idx)
    check.add(E.ExpectTableColumnsToMatchSet(
        column_set=list(ANNOTATION_COLUMNS), exact_match=False, description="annotations have record_id, reader, slice_index, x0, y0, x1, y1",
    ))  # fmt: skip
    if not set(ANNOTATION_COLUMNS) <= set(annotations.columns):
        return check
    check.add(E.ExpectColumnValuesToBeInSet(column="reader", value_set=list(ANNOTATION_READERS), description="reader is reader1, reader2 or adjudicated"))
    check.add(E.ExpectColumnValuesToBeInSet(column="in_manifest", value_set=[True], description="the annotated record is in the manifest"))
    check.add(E.ExpectColumnValuesToBeInSet(column="inside_image", value_set=[True], description="the box lies inside the image (0 <= x0 < x1 <= cols, 0 <= y0 < y1 <= rows)"))
    check.add(E.ExpectColumnValuesToBeInSet(column="slice_in_range", value_set=[True], description="slice_index is a slice of the record"))
    lo = cfg.box_min_px * (1 - cfg.box_tolerance)
    hi = cfg.box_max_px * (1 + cfg.box_tolerance)
    ref = cfg.box_reference_size
    for col in ("width_ref", "height_ref"):
        check.add(E.ExpectColumnValuesToBeBetween(
            column=col, min_value=lo, max_value=hi,
            description=f"box {col.split('_')[0]} within [{lo:g}, {hi:g}] px at {ref}x{ref} scale "
            f"({cfg.box_min_px:g}-{cfg.box_max_px:g} px, tolerance {cfg.box_tolerance:g})",
        ))  # fmt: skip
    return check


def reads_check(reads: pd.DataFrame) -> Check:
    """Expert reads: known reader, binary read, record link, one read per reader and record."""
    check = Check("reads", reads, index_columns=[c for c in ("record_id", "reader") if c in reads])
    check.add(E.ExpectTableColumnsToMatchSet(
        column_set=list(READS_COLUMNS), exact_match=False, description="reads have record_id, reader, read",
    ))  # fmt: skip
    if not set(READS_COLUMNS) <= set(reads.columns):
        return check
    check.add(E.ExpectColumnValuesToBeInSet(column="reader", value_set=list(EXPERT_READERS), description="reader is one of the five experts"))
    check.add(E.ExpectColumnValuesToBeInSet(column="read", value_set=[0, 1], description="read is 0 or 1"))
    check.add(E.ExpectColumnValuesToBeInSet(column="in_manifest", value_set=[True], description="the read record is in the manifest"))
    check.add(E.ExpectCompoundColumnsToBeUnique(column_list=["record_id", "reader"], description="one read per reader and record"))
    return check


def split_checks(t: SplitTables, n_folds: int, subsets: Sequence[str] | None = None) -> list[Check]:
    """No patient and no near-duplicate group in two parts or two folds, per sub-dataset."""
    rows = Check("splits.rows", t.rows, index_columns=["subset", "record_id"])
    rows.add(E.ExpectColumnValuesToBeInSet(column="part", value_set=["trainval", "test"], description="part is trainval or test"))
    rows.add(E.ExpectColumnValuesToBeBetween(column="fold", min_value=-1, max_value=n_folds - 1, description=f"fold in [-1, {n_folds - 1}]"))
    rows.add(E.ExpectColumnValuesToBeInSet(column="fold_consistent", value_set=[True], description="test rows have fold -1, train-val rows a fold >= 0"))
    rows.add(E.ExpectColumnValuesToBeInSet(column="in_manifest", value_set=[True], description="the split record is in the manifest"))
    rows.add(E.ExpectCompoundColumnsToBeUnique(column_list=["subset", "record_id"], description="a record appears once per sub-dataset"))
    if subsets is not None:
        rows.add(E.ExpectColumnValuesToBeInSet(column="subset", value_set=list(subsets), description="subset is a declared sub-dataset or mixed set"))
    patients = Check("splits.patients", t.patients, index_columns=["subset", "patient_id", "parts", "folds"])
    patients.add(E.ExpectColumnValuesToBeBetween(column="n_parts", max_value=1, description="no patient in both train-val and test of a sub-dataset"))
    patients.add(E.ExpectColumnValuesToBeBetween(column="n_folds", max_value=1, description="no patient in two folds of a sub-dataset"))
    patients.add(E.ExpectColumnValuesToBeBetween(column="n_groups", max_value=1, description="all records of a patient share one group"))
    groups = Check("splits.groups", t.groups, index_columns=["subset", "group_id", "parts", "folds"])
    groups.add(E.ExpectColumnValuesToBeBetween(column="n_parts", max_value=1, description="no near-duplicate group in both train-val and test of a sub-dataset"))
    groups.add(E.ExpectColumnValuesToBeBetween(column="n_folds", max_value=1, description="no near-duplicate group in two folds of a sub-dataset"))
    per = Check("splits.subsets", t.subsets, index_columns=["subset"])
    per.add(E.ExpectColumnValuesToBeBetween(column="n_trainval", min_value=1, description="every sub-dataset has a train-val part"))
    per.add(E.ExpectColumnValuesToBeBetween(column="n_test", min_value=1, description="every sub-dataset has a test part"))
    per.add(E.ExpectColumnValuesToBeInSet(column="union_matches", value_set=[True], description="a mixed set is exactly the union of its members' parts and folds"))
    return [rows, patients, groups, per]
