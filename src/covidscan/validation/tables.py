"""The tables the expectation suites run on: the ingest outputs plus columns computed from them.

Great Expectations checks columns of a dataframe. Facts that need the file system or a join (is the
array file there, does its shape match, is a box inside its image, is a patient in two parts) are
computed here into plain columns, so each becomes one readable expectation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covidscan.errors import DataError

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "record_id", "patient_id", "study_id", "modality", "kind", "label", "source", "centre", "origin",
    "array_path", "rows", "cols", "n_slices", "spacing_row", "spacing_col", "spacing_slice",
    "manufacturer", "transfer_syntax", "photometric", "rtpcr_initial", "severity", "content_sha256",
)  # fmt: skip
CLINICAL_INDICATORS: tuple[str, ...] = ("wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp")
CLINICAL_COLUMNS: tuple[str, ...] = ("record_id", "patient_id", *CLINICAL_INDICATORS)
ANNOTATION_COLUMNS: tuple[str, ...] = ("record_id", "reader", "slice_index", "x0", "y0", "x1", "y1")
READS_COLUMNS: tuple[str, ...] = ("record_id", "reader", "read")
ANNOTATION_READERS: tuple[str, ...] = ("reader1", "reader2", "adjudicated")
EXPERT_READERS: tuple[str, ...] = ("Respira.", "Emerg.", "Intern", "Rad-5th", "Rad-3rd")
MODALITY_KINDS: tuple[tuple[str, str], ...] = (("xray", "xray"), ("ct", "ct_volume"), ("ct", "ct_slice2d"))
KIND_DTYPE: dict[str, str] = {"xray": "float32", "ct_slice2d": "float32", "ct_volume": "int16"}
KIND_NDIM: dict[str, int] = {"xray": 2, "ct_slice2d": 2, "ct_volume": 3}
QUANTILE_SAMPLE = 2_000_000  # values used for the robust quantiles of one array


@dataclass
class IngestTables:
    """What the ingest stage wrote (clinical/annotations/reads are None when absent)."""

    root: Path
    manifest: pd.DataFrame
    clinical: pd.DataFrame | None = None
    annotations: pd.DataFrame | None = None
    reads: pd.DataFrame | None = None


def read_ingest(ingest_dir: str | Path) -> IngestTables:
    """Read ``manifest.parquet`` (required) and the optional side tables of an ingest folder.

    Raises:
        DataError: the folder or its manifest is missing.
    """
    root = Path(ingest_dir)
    path = root / "manifest.parquet"
    if not path.is_file():
        raise DataError(f"{path}: ingest manifest not found (run the ingest stage)")

    def optional(name: str) -> pd.DataFrame | None:
        p = root / f"{name}.parquet"
        return pd.read_parquet(p) if p.is_file() else None

    return IngestTables(root, pd.read_parquet(path), optional("clinical"), optional("annotations"), optional("reads"))


def normalise_column_name(name: str) -> str:
    """``"Patient Name"``, ``"PatientName"``, ``"patient-name"`` -> ``"patientname"``."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def columns_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per column of ``df``: its name and its normalised name."""
    return pd.DataFrame({"column": [str(c) for c in df.columns], "normalised": [normalise_column_name(c) for c in df.columns]})


def manifest_table(tables: IngestTables, patient_id_regex: str | None = None, study_id_regex: str | None = None) -> pd.DataFrame:
    """The manifest plus ``array_present`` (the array file exists under the ingest folder) and, when
    the regexes are given, ``patient_id_pseudonymised`` / ``study_id_pseudonymised``.

    The pseudonym checks are booleans on purpose: a failing raw identifier is then never copied into
    the report, the logs or the data docs (only its record_id is)."""
    m = tables.manifest.copy()
    for col, regex in (("patient_id", patient_id_regex), ("study_id", study_id_regex)):
        if regex is not None and col in m:
            m[f"{col}_pseudonymised"] = m[col].astype("string").str.fullmatch(regex).fillna(False).astype(bool)
            m[col] = m[col].where(m[f"{col}_pseudonymised"], "<not a pseudonym>")
    if "array_path" in m:
        m["array_present"] = [
            isinstance(p, str) and p != "" and not Path(p).is_absolute() and ".." not in Path(p).parts
            and (tables.root / p).is_file()
            for p in m["array_path"]
        ]  # fmt: skip
    return m


def _stats(arr: np.ndarray, quantile: float, padding: float | None = None) -> dict[str, float]:
    flat = np.asarray(arr).reshape(-1)
    finite = np.isfinite(flat) if flat.dtype.kind == "f" else None
    n_nonfinite = int((~finite).sum()) if finite is not None else 0
    values = flat[finite] if finite is not None and n_nonfinite else flat
    padding_fraction = 0.0
    if padding is not None and values.size:
        inside = values > padding
        padding_fraction = float(1.0 - inside.mean())
        values = values[inside]
    if values.size == 0:
        nan = float("nan")
        return dict(v_min=nan, v_max=nan, v_low=nan, v_high=nan, v_mean=nan, v_std=nan, n_nonfinite=n_nonfinite,
                    padding_fraction=padding_fraction)  # fmt: skip
    step = max(1, values.size // QUANTILE_SAMPLE)
    sample = values[::step].astype(np.float64)
    low, high = np.quantile(sample, [quantile, 1.0 - quantile]) if quantile > 0 else (values.min(), values.max())
    return dict(
        v_min=float(values.min()), v_max=float(values.max()), v_low=float(low), v_high=float(high),
        v_mean=float(sample.mean()), v_std=float(sample.std()), n_nonfinite=n_nonfinite,
        padding_fraction=padding_fraction,
    )  # fmt: skip


def image_table(tables: IngestTables, quantile: float, ct_padding_hu: float | None = None) -> pd.DataFrame:
    """Statistics of every stored array whose file exists (missing files are the manifest suite's).

    Columns: record_id, kind, modality, array_path, dtype, ndim, shape, shape_matches (the array's
    shape is the manifest's rows x cols [x n_slices]), rows, cols, n_slices, spacing_*, v_min, v_max,
    v_low / v_high (the ``quantile`` / ``1 - quantile`` quantiles), v_mean, v_std, n_nonfinite and
    padding_fraction. For CT volumes, voxels <= ``ct_padding_hu`` (padding outside the reconstruction
    circle) are left out of the value statistics and counted in ``padding_fraction``.
    """
    from rich.progress import track

    m = manifest_table(tables)
    need = {"record_id", "kind", "array_path", "rows", "cols", "n_slices"}
    if not need <= set(m.columns) or "array_present" not in m:
        return pd.DataFrame()
    present = m[m["array_present"]]
    out = []
    rows = list(present.itertuples(index=False))
    for r in track(rows, description="image statistics", disable=len(rows) < 200, transient=True):
        path = tables.root / r.array_path
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            log.warning("%s: cannot load array: %s", path, err)
            out.append(dict(record_id=r.record_id, kind=r.kind, array_path=r.array_path, dtype=f"unreadable: {err}", ndim=-1))
            continue
        expected = (int(r.rows), int(r.cols)) if r.kind != "ct_volume" else (int(r.n_slices), int(r.rows), int(r.cols))
        stats = _stats(arr, quantile, ct_padding_hu if r.kind == "ct_volume" else None)
        out.append(
            dict(
                record_id=r.record_id, kind=r.kind, modality=getattr(r, "modality", ""), array_path=r.array_path,
                dtype=str(arr.dtype), ndim=int(arr.ndim), shape="x".join(map(str, arr.shape)),
                shape_matches=tuple(arr.shape) == expected, rows=int(r.rows), cols=int(r.cols),
                n_slices=int(r.n_slices), spacing_row=getattr(r, "spacing_row", np.nan),
                spacing_col=getattr(r, "spacing_col", np.nan), spacing_slice=getattr(r, "spacing_slice", np.nan),
                **stats,
            )
        )  # fmt: skip
    return pd.DataFrame(out)


def clinical_table(tables: IngestTables) -> pd.DataFrame | None:
    """Clinical indicators plus ``in_manifest`` and ``patient_matches`` (same patient as the record)."""
    if tables.clinical is None:
        return None
    c = tables.clinical.copy()
    if "record_id" in c:
        pid = tables.manifest.set_index("record_id")["patient_id"] if "patient_id" in tables.manifest else pd.Series(dtype=str)
        c["in_manifest"] = c["record_id"].isin(pid.index)
        if "patient_id" in c:
            c["patient_matches"] = c["record_id"].map(pid).eq(c["patient_id"]) | ~c["in_manifest"]
    return c


def annotation_table(tables: IngestTables, reference_size: int) -> pd.DataFrame | None:
    """Boxes plus ``in_manifest``, ``inside_image``, ``slice_in_range`` and the box sides scaled to
    ``reference_size`` (``width_ref = (x1 - x0) * reference_size / cols``, same for height/rows)."""
    if tables.annotations is None:
        return None
    a = tables.annotations.copy()
    if not set(ANNOTATION_COLUMNS) <= set(a.columns):
        return a
    geo = tables.manifest.set_index("record_id")[["rows", "cols", "n_slices"]]
    j = a.join(geo, on="record_id")
    a["in_manifest"] = j["rows"].notna()
    a["inside_image"] = (
        (j["x0"] >= 0) & (j["y0"] >= 0) & (j["x1"] <= j["cols"]) & (j["y1"] <= j["rows"])
        & (j["x1"] > j["x0"]) & (j["y1"] > j["y0"])
    ) | ~a["in_manifest"]  # fmt: skip
    a["slice_in_range"] = ((j["slice_index"] >= 0) & (j["slice_index"] < j["n_slices"])) | ~a["in_manifest"]
    a["width_ref"] = (j["x1"] - j["x0"]) * reference_size / j["cols"]
    a["height_ref"] = (j["y1"] - j["y0"]) * reference_size / j["rows"]
    return a


def reads_table(tables: IngestTables) -> pd.DataFrame | None:
    """Expert reads plus ``in_manifest``."""
    if tables.reads is None:
        return None
    r = tables.reads.copy()
    if "record_id" in r:
        r["in_manifest"] = r["record_id"].isin(tables.manifest["record_id"])
    return r


@dataclass
class SplitTables:
    """The split table joined with the manifest, and its per-patient / per-group / per-subset views."""

    rows: pd.DataFrame
    patients: pd.DataFrame
    groups: pd.DataFrame
    subsets: pd.DataFrame


def _spread(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per (subset, key): how many parts, train-val folds and groups it occupies."""

    def fold_count(s: pd.DataFrame) -> int:
        return int(s.loc[s["part"] == "trainval", "fold"].nunique())

    g = rows.groupby(["subset", key], sort=True)
    out = pd.DataFrame(
        {
            "n_parts": g["part"].nunique(),
            "parts": g["part"].agg(lambda s: ",".join(sorted(set(s)))),
            "n_folds": g[["part", "fold"]].apply(fold_count),
            "folds": g["fold"].agg(lambda s: ",".join(str(v) for v in sorted(set(s)))),
            "n_records": g.size(),
        }
    ).reset_index()
    return out


def split_tables(
    splits: pd.DataFrame,
    manifest: pd.DataFrame,
    mixed: dict[str, list[str]] | None = None,
    patient_id_regex: str = r"^p-[0-9a-f]{16}$",
) -> SplitTables:
    """Join the split table with the manifest's patient ids and summarise each patient and group.

    Args:
        splits: the table written by :func:`covidscan.data.splits.write_splits`.
        manifest: the ingest manifest (for ``patient_id``).
        mixed: ``SplitsConfig.mixed``; a mixed set's rows must equal its members' rows (``union_matches``).
        patient_id_regex: ids that do not match are shown as ``<not a pseudonym>``.
    """
    rows = splits.copy()
    pid = manifest.set_index("record_id")["patient_id"].astype("string")
    pid = pid.where(pid.str.fullmatch(patient_id_regex).fillna(False), "<not a pseudonym>")  # never echo raw ids
    rows["patient_id"] = rows["record_id"].map(pid)
    rows["in_manifest"] = rows["patient_id"].notna()
    rows["patient_id"] = rows["patient_id"].fillna("<not in manifest>")
    rows["fold_consistent"] = ((rows["part"] == "test") & (rows["fold"] == -1)) | (
        (rows["part"] == "trainval") & (rows["fold"] >= 0)
    )
    patients = _spread(rows, "patient_id")
    groups_per_patient = rows.groupby(["subset", "patient_id"])["group_id"].nunique().rename("n_groups")
    patients = patients.join(groups_per_patient, on=["subset", "patient_id"])
    groups = _spread(rows, "group_id")
    per = rows.groupby("subset", sort=True)
    subsets = pd.DataFrame(
        {
            "n_trainval": per["part"].agg(lambda s: int((s == "trainval").sum())),
            "n_test": per["part"].agg(lambda s: int((s == "test").sum())),
        }
    ).reset_index()
    subsets["union_matches"] = True
    for name, members in (mixed or {}).items():
        if name not in set(rows["subset"]):
            continue
        key = ["record_id", "part", "fold"]
        got = rows.loc[rows["subset"] == name, key].drop_duplicates().sort_values(key).reset_index(drop=True)
        want = rows.loc[rows["subset"].isin(members), key].drop_duplicates().sort_values(key).reset_index(drop=True)
        subsets.loc[subsets["subset"] == name, "union_matches"] = got.equals(want)
    return SplitTables(rows=rows, patients=patients, groups=groups, subsets=subsets)
