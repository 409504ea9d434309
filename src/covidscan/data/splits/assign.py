"""Sub-dataset selection, train-val/test and folds by group, mixed unions, centre-held-out, and the split
table's files (steps 2-6 of :mod:`covidscan.data.splits`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from covidscan.config import SplitsConfig, SubsetSpec
from covidscan.data.splits.grouping import Grouping, assign_groups, hash_records
from covidscan.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLIT_COLUMNS: tuple[str, ...] = (
    "record_id",
    "subset",
    "part",
    "fold",
    "group_id",
    "label",
    "binary_label",
    "yao_subset",
)
PARTS: tuple[str, ...] = ("trainval", "test")
YAO_SUBSETS: dict[str, str] = {"covid19": "S1", "normal": "S2", "pneumonia": "S3"}


# ------------------------------------------------------------------------------------- names
def part_name(subset: str, part: str) -> str:
    """The paper's name of a sub-dataset part: ``XPDS`` -> ``XPTS`` (train-val) / ``XPVS`` (test).

    Args:
        subset: sub-dataset name, e.g. ``"CTPDS"``.
        part: ``"trainval"`` or ``"test"``.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    suffix = "TS" if part == "trainval" else "VS"
    return f"{subset[:-2]}{suffix}" if subset.endswith("DS") else f"{subset}_{suffix}"


# --------------------------------------------------------------------------------- selection
def select_subset(
    manifest: pd.DataFrame,
    name: str,
    spec: SubsetSpec,
    require_ids: set[str] | None = None,
) -> pd.DataFrame:
    """The manifest rows of one sub-dataset (modality x kinds x sources x classes [x clinical+annotated]).

    Args:
        manifest: the ingest manifest.
        name: sub-dataset name (for messages).
        spec: the selection.
        require_ids: when given, keep only these record_ids (CADS: with clinical indicators and
            annotations).

    Raises:
        DataError: the selection is empty (the message lists what the manifest has).
    """
    sel = (manifest["modality"] == spec.modality) & manifest["label"].isin(spec.classes)
    if spec.kinds is not None:
        sel &= manifest["kind"].isin(spec.kinds)
    if spec.sources in ("public", "hospital"):
        sel &= manifest["origin"] == spec.sources
    elif isinstance(spec.sources, list):
        sel &= manifest["source"].isin(spec.sources)
    if require_ids is not None:
        sel &= manifest["record_id"].isin(require_ids)
    out = manifest.loc[sel]
    if out.empty:
        counts = manifest.groupby(["modality", "kind", "origin", "source", "label"]).size()
        have = ", ".join(f"{'/'.join(map(str, key))} {int(n)}" for key, n in counts.items())
        raise DataError(
            f"subsets.{name} selects no records (modality={spec.modality}, kinds={spec.kinds or 'all'}, sources={spec.sources}, "
            f"classes={spec.classes}{', with clinical indicators and annotations' if require_ids is not None else ''}); "
            f"the manifest has (modality/kind/origin/source/label): {have}"
        )
    return out


# ------------------------------------------------------------------------------------ splits
def _random_state(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**32)


def _group_strata(records: pd.DataFrame) -> pd.Series:
    """One stratum per group: its label; for a group mixing labels, the most frequent (ties: first
    by name), so near-duplicate merges do not multiply the strata."""
    return records.groupby("group_id", sort=True)["label"].agg(lambda s: sorted(s.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))[0][0])


def _ttsf(strata: pd.Series, test_size: float, random_state: int) -> tuple[set[str], bool]:
    """Stratified train_test_split over groups. Returns (test group ids, stratified?)."""
    groups = strata.index.to_numpy()
    if len(groups) < 2:
        return set(), False
    labels = strata.to_numpy().astype(object)
    counts = pd.Series(labels).value_counts()
    rare = counts[counts < 2].index
    if len(rare) > 1:
        labels = np.where(np.isin(labels, rare), "_rare", labels)
    elif len(rare) == 1:  # a lone group joins the largest stratum
        labels = np.where(labels == rare[0], counts.index[0], labels)
    n_strata = len(set(labels))
    n_test = int(np.ceil(test_size * len(groups)))
    n_train = len(groups) - n_test
    stratify = labels if (pd.Series(labels).value_counts().min() >= 2 and min(n_test, n_train) >= n_strata) else None
    _, test = train_test_split(groups, test_size=test_size, stratify=stratify, random_state=random_state)
    return set(test.tolist()), stratify is not None


def _dealt_folds(records: pd.DataFrame, n_folds: int, random_state: int) -> pd.Series:
    """Stratified round-robin over groups: each class's groups (shuffled) are dealt to the folds in
    turn, continuing where the previous class stopped. Used when StratifiedGroupKFold cannot run
    (fewer groups than folds in every class); folds may then be empty."""
    rng = np.random.default_rng(random_state)
    strata = _group_strata(records)
    fold_of: dict[str, int] = {}
    offset = 0
    for _, groups in strata.groupby(strata, sort=True):
        for i, g in enumerate(rng.permutation(groups.index.to_numpy())):
            fold_of[g] = (offset + i) % n_folds
        offset += len(groups)
    return records["group_id"].map(fold_of).astype(int)


def _folds(records: pd.DataFrame, n_folds: int, random_state: int) -> pd.Series:
    """Grouped, stratified fold per record (index aligned with ``records``).

    ``StratifiedGroupKFold(n_folds, shuffle=True)``; when it cannot run (a tiny sub-dataset where
    every class has fewer groups than folds) a stratified round-robin over groups, with a warning.
    """
    if records.empty:
        return pd.Series([], dtype=int, index=records.index)
    if records["group_id"].nunique() < n_folds:
        log.warning("only %d train-val groups for %d folds: some folds are empty", records["group_id"].nunique(), n_folds)
        return _dealt_folds(records, n_folds, random_state)
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    fold = np.full(len(records), -1, dtype=int)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
            for k, (_, val_idx) in enumerate(sgkf.split(records, y=records["label"], groups=records["group_id"])):
                fold[val_idx] = k
    except ValueError as err:  # every class has fewer members than folds
        log.warning("StratifiedGroupKFold cannot split (%s); dealing groups to folds round-robin per class", err)
        return _dealt_folds(records, n_folds, random_state)
    return pd.Series(fold, index=records.index)


@dataclass
class SplitResult:
    """The tidy split table and its JSON-able summary."""

    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _annotate(rows: pd.DataFrame, subset: str) -> pd.DataFrame:
    out = rows[["record_id", "part", "fold", "group_id", "label"]].copy()
    out.insert(1, "subset", subset)
    out["binary_label"] = (out["label"] == "covid19").astype(int)
    out["yao_subset"] = out["label"].map(YAO_SUBSETS).fillna("")
    return out


def _subset_summary(rows: pd.DataFrame, method: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    by_part = {p: rows.loc[rows["part"] == p, "label"].value_counts().sort_index().to_dict() for p in PARTS}
    tv = rows[rows["part"] == "trainval"]
    by_fold = {
        str(k): g["label"].value_counts().sort_index().to_dict() for k, g in tv.groupby("fold", sort=True)
    }
    n = len(rows)
    info: dict[str, Any] = {
        "method": method,
        "n_records": n,
        "n_groups": int(rows["group_id"].nunique()),
        "n_trainval": int((rows["part"] == "trainval").sum()),
        "n_test": int((rows["part"] == "test").sum()),
        "test_fraction": round(float((rows["part"] == "test").mean()), 4) if n else 0.0,
        "classes_by_part": {p: {str(k): int(v) for k, v in d.items()} for p, d in by_part.items()},
        "classes_by_fold": {f: {str(k): int(v) for k, v in d.items()} for f, d in by_fold.items()},
    }
    if extra:
        info.update(extra)
    return info


def _skip(summary: dict[str, Any], name: str, why: str) -> None:
    """Record a sub-dataset the data cannot make (no records, one group, no test centre): it has no rows
    in the split table, and every stage that needs it skips with this reason."""
    log.warning("%s skipped: %s", name, why)
    summary[name] = {"skipped": True, "why": why}


def make_splits(
    manifest: pd.DataFrame,
    subsets: Mapping[str, SubsetSpec],
    cfg: SplitsConfig,
    seed: int,
    grouping: Grouping | None = None,
    clinical: pd.DataFrame | None = None,
    annotations: pd.DataFrame | None = None,
) -> SplitResult:
    """Split every sub-dataset by group: TTSF train-val/test, folds, mixed unions, centre-held-out.

    Args:
        manifest: the ingest manifest.
        subsets: ``params.subsets``.
        cfg: ``params.splits``.
        seed: ``params.run.seed`` (the result is a function of the inputs and this seed).
        grouping: from :func:`assign_groups`; None groups by patient only (no image hashing).
        clinical: ``clinical.parquet`` (needed by ``cfg.clinical_subsets``).
        annotations: ``annotations.parquet`` (needed by ``cfg.clinical_subsets``).

    Raises:
        ConfigError: a name in ``cfg.centre_subsets``/``cfg.clinical_subsets``/``cfg.mixed`` is not
            a sub-dataset, or a mixed set's name collides with one.
        DataError: no sub-dataset selects any record. A sub-dataset that selects no records, has fewer
            than two groups, or (centre split) lacks test-centre or train-centre records is skipped:
            no rows, and ``summary["subsets"][name]`` is ``{"skipped": True, "why": ...}``.
    """
    unknown = [n for n in cfg.centre_subsets if n not in subsets]
    if unknown:
        raise ConfigError(f"splits.centre_subsets names {unknown}, not among subsets {sorted(subsets)}")
    for mixed_name in cfg.mixed:
        if mixed_name in subsets:
            raise ConfigError(f"splits.mixed.{mixed_name} has the name of a sub-dataset; choose another name")

    m = manifest.sort_values("record_id", kind="stable").reset_index(drop=True)
    if grouping is None:
        grouping = assign_groups(m, None, cfg.phash_max_distance)
    m["group_id"] = m["record_id"].map(grouping.group_id)
    if m["group_id"].isna().any():
        missing = m.loc[m["group_id"].isna(), "record_id"].head(5).tolist()
        raise DataError(f"grouping does not cover manifest records, e.g. {missing}")

    clinical_ids: set[str] | None = None
    if any(n in subsets for n in cfg.clinical_subsets):
        if clinical is None or annotations is None:
            raise DataError(
                f"sub-datasets {[n for n in cfg.clinical_subsets if n in subsets]} need clinical.parquet "
                "and annotations.parquet from ingest"
            )
        clinical_ids = set(clinical["record_id"]) & set(annotations["record_id"])

    assigned: dict[str, tuple[str, int]] = {}  # group_id -> (part, fold), shared by the TTSF subsets
    pieces: list[pd.DataFrame] = []
    summary: dict[str, Any] = {}
    centre_set = set(cfg.centre_test)

    selected: dict[str, pd.DataFrame] = {}
    for name, spec in subsets.items():
        try:
            selected[name] = select_subset(m, name, spec, clinical_ids if name in cfg.clinical_subsets else None)
        except DataError as err:  # a team's sources need not cover every sub-dataset of the papers
            _skip(summary, name, str(err))
    # smallest first: a sub-dataset is split before any superset of it (CADS before CTHDS), so it gets
    # its own stratified split and the larger one inherits those groups (never the other way round,
    # which could leave the small one without a test part)
    order = sorted(selected, key=lambda n: (selected[n]["group_id"].nunique(), n))
    for name in order:
        rows = selected[name].copy()
        if rows["group_id"].nunique() < 2:
            _skip(summary, name, f"subsets.{name} has {rows['group_id'].nunique()} patient group(s); at least 2 are needed to split")
            continue
        rs = _random_state(seed, name)
        if name in cfg.centre_subsets:
            is_test = rows["centre"].isin(centre_set)
            if not is_test.any() or is_test.all():
                _skip(
                    summary, name, f"subsets.{name}: centre split needs records from splits.centre_test={sorted(centre_set)} and "
                    f"from other centres; it has centres {sorted(rows['centre'].unique())}",
                )  # fmt: skip
                continue
            test_groups = set(rows.loc[is_test, "group_id"])
            leak = (~is_test) & rows["group_id"].isin(test_groups)
            n_excluded = int(leak.sum())
            if n_excluded:
                log.warning("%s: %d train-centre record(s) share a group with test-centre records; left out", name, n_excluded)
            rows = rows.loc[~leak]
            rows["part"] = np.where(rows["centre"].isin(centre_set), "test", "trainval")
            rows["fold"] = -1
            tv = rows["part"] == "trainval"
            rows.loc[tv, "fold"] = _folds(rows.loc[tv], cfg.n_folds, rs)
            extra = {
                "centres_trainval": sorted(rows.loc[tv, "centre"].unique().tolist()),
                "centres_test": sorted(rows.loc[~tv, "centre"].unique().tolist()),
                "excluded_shared_groups": n_excluded,
            }
            pieces.append(_annotate(rows, name))
            summary[name] = _subset_summary(rows, "centre", extra)
            continue

        strata = _group_strata(rows)
        pinned = [g for g in strata.index if g in assigned]
        free = strata.drop(index=pinned)
        test_groups, stratified = _ttsf(free, cfg.test_size, rs)
        rows["part"] = [
            assigned[g][0] if g in assigned else ("test" if g in test_groups else "trainval") for g in rows["group_id"]
        ]
        rows["fold"] = -1
        free_tv = (rows["part"] == "trainval") & ~rows["group_id"].isin(assigned)
        rows.loc[free_tv, "fold"] = _folds(rows.loc[free_tv], cfg.n_folds, rs)
        pinned_rows = rows["group_id"].isin(assigned)
        if pinned_rows.any():
            rows.loc[pinned_rows, "fold"] = rows.loc[pinned_rows, "group_id"].map(lambda g: assigned[g][1]).astype(int)
        for g, part, fold in zip(rows["group_id"], rows["part"], rows["fold"]):
            assigned.setdefault(g, (part, int(fold)))
        pieces.append(_annotate(rows, name))
        summary[name] = _subset_summary(rows, "ttsf", {"stratified": stratified, "groups_inherited": len(pinned)})

    by_name = {p["subset"].iat[0]: p for p in pieces}
    for mixed_name, members in cfg.mixed.items():
        present = [s for s in members if s in by_name]
        if not present:
            why = f"splits.mixed.{mixed_name}: none of {members} has records"
            if any(s in subsets for s in members):
                _skip(summary, mixed_name, why)
            else:
                log.debug("mixed set %s skipped: none of %s is a sub-dataset", mixed_name, members)
            continue
        if len(present) < len(members):
            log.warning("mixed set %s: %s are not sub-datasets with records; built from %s", mixed_name, sorted(set(members) - set(present)), present)
        bad = [s for s in present if s in cfg.centre_subsets]
        if bad:
            raise ConfigError(f"splits.mixed.{mixed_name} unions centre-split sub-datasets {bad}; use TTSF sub-datasets")
        union = pd.concat([by_name[s] for s in present]).drop_duplicates("record_id").copy()
        union["subset"] = mixed_name
        pieces.append(union)
        summary[mixed_name] = _subset_summary(union, "union", {"members": present})

    if not pieces:
        raise DataError(
            "no sub-dataset selects any record of the manifest: "
            + "; ".join(f"{name}: {info['why']}" for name, info in summary.items() if info.get("skipped"))
        )
    table = pd.concat(pieces, ignore_index=True)[list(SPLIT_COLUMNS)]
    table["fold"] = table["fold"].astype("int64")
    table["binary_label"] = table["binary_label"].astype("int64")
    table = table.sort_values(["subset", "record_id"], kind="stable").reset_index(drop=True)
    digest = hashlib.sha256(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes()).hexdigest()
    result_summary = {
        "seed": int(seed),
        "config": cfg.model_dump(mode="json"),
        "grouping": grouping.summary(),
        "subsets": summary,
        "part_names": {s: {p: part_name(s, p) for p in PARTS} for s in summary},
        "table_sha256": digest,
    }
    return SplitResult(table=table, summary=result_summary)


def split_manifest(
    manifest: pd.DataFrame,
    ingest_dir: str | Path,
    subsets: Mapping[str, SubsetSpec],
    cfg: SplitsConfig,
    seed: int,
    clinical: pd.DataFrame | None = None,
    annotations: pd.DataFrame | None = None,
) -> SplitResult:
    """Hash images, group near-duplicates with patients, and split (the ``split`` stage's work).

    Args:
        manifest: the ingest manifest.
        ingest_dir: folder the manifest's ``array_path`` is relative to.
        subsets: ``params.subsets``.
        cfg: ``params.splits``.
        seed: ``params.run.seed``.
        clinical: ``clinical.parquet`` (for CADS).
        annotations: ``annotations.parquet`` (for CADS).
    """
    hashes = None if cfg.hash_method == "none" else hash_records(manifest, ingest_dir, method=cfg.hash_method)
    grouping = assign_groups(manifest, hashes, cfg.phash_max_distance, cfg.near_duplicate_max_patients)
    log.info("grouping: %s", grouping.summary())
    return make_splits(manifest, subsets, cfg, seed, grouping=grouping, clinical=clinical, annotations=annotations)


def write_splits(result: SplitResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``splits.parquet`` and ``summary.json`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "splits.parquet"
    summary_path = out_dir / "summary.json"
    result.table.to_parquet(table_path, index=False)
    summary_path.write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
    return table_path, summary_path


def read_splits(path: str | Path) -> pd.DataFrame:
    """Read a split table written by :func:`write_splits` (file or its folder).

    Raises:
        DataError: the file is missing or lacks the split columns.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "splits.parquet"
    if not path.is_file():
        raise DataError(f"{path}: split table not found (run the split stage)")
    table = pd.read_parquet(path)
    missing = [c for c in SPLIT_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: split table lacks columns {missing}")
    return table
