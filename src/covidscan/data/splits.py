"""Patient-grouped splits of the sub-datasets (seed 000 Table 1, seed 004 centre-held-out).

The order of work, for one manifest:

1. **Groups first.** Records of one patient form a group. Near-duplicate images (the same picture
   published by two sources, perhaps under two patient pseudonyms) are merged into one group: a
   64-bit perceptual hash (pHash: DCT of a 32x32 thumbnail; or dHash) of a representative 2D image
   (the X-ray, the 2D CT image, or a CT volume's middle slice) and union-find over pairs at Hamming
   distance <= ``SplitsConfig.phash_max_distance`` within a modality (``hash_method: none`` skips
   this); identical stored arrays
   (``content_sha256``) are merged too. Pairs are merged closest first, and never into a group of
   more than ``SplitsConfig.near_duplicate_max_patients`` patients (look-alike chains are not copies).
2. **Sub-datasets** are selections of the manifest (``params.subsets``: modality x sources x
   classes). Sources are ``"public"``/``"hospital"`` (the ``origin`` column), ``"all"``, or a list of
   source names. Sub-datasets in ``SplitsConfig.clinical_subsets`` (CADS; names that are not sub-datasets are ignored) keep only records that
   have clinical indicators and annotations.
3. **Train-val / test (TTSF).** The paper used scikit-learn's ``train_test_split``. We apply it to
   the *groups* of a sub-dataset, stratified by the group's class (its label; the most frequent one
   when a group mixes labels), so that no group can straddle the parts; records follow their group.
   Classes with a single group are pooled (or join the largest class); when stratifying is
   impossible (too few groups) the split is unstratified and the summary says so.
4. **Folds.** ``StratifiedGroupKFold(n_folds, shuffle=True)`` on the train-val records (y = label,
   groups = group_id) gives the folds the teachers use; test records have fold -1.
5. **One assignment per group across sub-datasets.** Sub-datasets are split smallest first (fewest
   groups; ties by name). The first one that contains a group decides its part and fold; a later
   sub-dataset containing the same group inherits them and splits only its new groups (so CADS gets
   its own stratified split and CTHDS, its superset, inherits it). So a patient (or a near-duplicate image) is never
   train-val in one sub-dataset and test in another, and the mixed sets (``SplitsConfig.mixed``:
   XMDS = XPDS + XHDS, CTMDS = CTPDS + CTHDS) are the part-by-part unions of their members, e.g.
   XMTS = XPTS + XHTS, with consistent folds.
6. **Centre-held-out (seed 004).** Sub-datasets in ``SplitsConfig.centre_subsets`` are split by
   centre instead: test = records from ``centre_test``, train-val = the other centres (grouped,
   stratified folds inside). Records of a group that also has test-centre records are left out of
   train-val (counted in the summary). These sub-datasets do not take part in step 5.

Every row also carries ``label``, the seed 004 binary label (covid19 = 1, else 0) and its subset
(S1 covid19, S2 normal = NP, S3 pneumonia = CAP; "" otherwise).

Sub-dataset names follow the paper: a name ending in ``DS`` has parts ``...TS`` (train-val) and
``...VS`` (test): :func:`part_name`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from covidscan.config import SplitsConfig, SubsetSpec
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
    "seed004_subset",
)
PARTS: tuple[str, ...] = ("trainval", "test")
SEED004_SUBSETS: dict[str, str] = {"covid19": "S1", "normal": "S2", "pneumonia": "S3"}
HASH_BITS = 64


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


# ------------------------------------------------------------------------- perceptual hashes
def _normalise(image: np.ndarray) -> np.ndarray | None:
    """Robustly rescale to [0, 1] (1st-99th percentile); None for a (near-)constant image."""
    img = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, 0.0).astype(np.float32)
    lo, hi = np.percentile(img, [1.0, 99.0])
    if not np.isfinite(hi - lo) or hi - lo <= 1e-6 * max(1.0, abs(hi)):
        return None
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _bits_to_int(bits: np.ndarray) -> int:
    packed = np.packbits(bits.astype(np.uint8).ravel())
    return int.from_bytes(packed.tobytes(), "big")


def image_hash(image: np.ndarray, method: str = "phash") -> int | None:
    """A 64-bit perceptual hash of a 2D image (None for a constant image, which is not hashed).

    Args:
        image: 2D array (any dtype; intensities are rescaled robustly first).
        method: ``"phash"`` (sign of the 8x8 low-frequency DCT block of a 32x32 thumbnail against its
            median, DC excluded) or ``"dhash"`` (horizontal gradient signs of a 9x8 thumbnail).
    """
    if image.ndim != 2:
        raise ValueError(f"image_hash needs a 2D image, got shape {image.shape}")
    img = _normalise(image)
    if img is None:
        return None
    if method == "phash":
        small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
        block = cv2.dct(small)[:8, :8]
        median = np.median(block.ravel()[1:])
        return _bits_to_int(block > median)
    if method == "dhash":
        small = cv2.resize(img, (9, 8), interpolation=cv2.INTER_AREA)
        return _bits_to_int(small[:, 1:] > small[:, :-1])
    raise ValueError(f"unknown hash method {method!r}; use 'phash' or 'dhash'")


def representative_image(array_path: str | Path, kind: str) -> np.ndarray:
    """The 2D image a record is hashed by: the image itself, or a CT volume's middle slice.

    Args:
        array_path: the record's ``.npy`` file (memory-mapped; only the slice is read).
        kind: ``"xray"``, ``"ct_slice2d"`` or ``"ct_volume"``.
    """
    arr = np.load(array_path, mmap_mode="r", allow_pickle=False)
    if kind == "ct_volume" or arr.ndim == 3:
        if arr.ndim != 3:
            raise DataError(f"{array_path}: a ct_volume must be 3D (z, y, x), got shape {arr.shape}")
        return np.asarray(arr[arr.shape[0] // 2])
    if arr.ndim != 2:
        raise DataError(f"{array_path}: a {kind} image must be 2D, got shape {arr.shape}")
    return np.asarray(arr)


def hash_records(manifest: pd.DataFrame, ingest_dir: str | Path, method: str = "phash") -> pd.Series:
    """Perceptual hash per record (index = record_id; None where the image is constant).

    Args:
        manifest: the ingest manifest (``record_id``, ``kind``, ``array_path``).
        ingest_dir: the folder ``array_path`` is relative to.
        method: see :func:`image_hash`.

    Raises:
        DataError: an array file is missing or has the wrong shape (naming it).
    """
    from rich.progress import track

    ingest_dir = Path(ingest_dir)
    out: dict[str, int | None] = {}
    rows = list(manifest[["record_id", "kind", "array_path"]].itertuples(index=False))
    for rec, kind, rel in track(rows, description="hashing images", disable=len(rows) < 200, transient=True):
        path = ingest_dir / rel
        if not path.is_file():
            raise DataError(f"{path}: array file of record {rec} not found (manifest array_path={rel!r})")
        out[rec] = image_hash(representative_image(path, kind), method=method)
    return pd.Series(out, dtype=object, name="image_hash")


def near_duplicate_pairs(hashes: Iterable[int], max_distance: int, block: int = 512) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose 64-bit hashes differ in at most ``max_distance`` bits.

    Args:
        hashes: 64-bit integer hashes.
        max_distance: Hamming distance threshold (inclusive).
        block: rows compared at once (memory ~ block x len(hashes) bytes).
    """
    return [(i, j) for i, j, _ in near_duplicate_edges(hashes, max_distance, block)]


def near_duplicate_edges(hashes: Iterable[int], max_distance: int, block: int = 512) -> list[tuple[int, int, int]]:
    """Like :func:`near_duplicate_pairs`, with the Hamming distance: ``(i, j, distance)``."""
    h = np.fromiter((int(x) for x in hashes), dtype=np.uint64)
    edges: list[tuple[int, int, int]] = []
    for start in range(0, len(h), block):
        chunk = h[start : start + block]
        dist = np.bitwise_count(chunk[:, None] ^ h[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        dd = dist[ii, jj]
        ii = ii + start
        keep = jj > ii
        edges.extend(zip(ii[keep].tolist(), jj[keep].tolist(), dd[keep].tolist()))
    return edges


class _UnionFind:
    def __init__(self, items: Iterable[str]) -> None:
        self.parent = {x: x for x in items}

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # deterministic: the smaller id becomes the root
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


@dataclass
class Grouping:
    """Groups of records that must stay together (same patient, identical or near-duplicate image)."""

    group_id: pd.Series  # index record_id -> "g-<12 hex>"
    near_duplicate_pairs: list[tuple[str, str]]  # record_id pairs joined by the image hash
    exact_duplicate_pairs: int
    unhashed: list[str]  # record_ids whose image was constant (not hashed)
    rejected_pairs: list[tuple[str, str]] = field(default_factory=list)  # close hashes not merged (size cap)

    def summary(self) -> dict[str, Any]:
        sizes = self.group_id.value_counts()
        return {
            "n_records": int(len(self.group_id)),
            "n_groups": int(sizes.size),
            "largest_group": int(sizes.max()) if sizes.size else 0,
            "near_duplicate_pairs": len(self.near_duplicate_pairs),
            "near_duplicate_pairs_rejected": len(self.rejected_pairs),
            "exact_duplicate_pairs": self.exact_duplicate_pairs,
            "unhashed_records": len(self.unhashed),
        }


def assign_groups(
    manifest: pd.DataFrame,
    hashes: pd.Series | None,
    max_distance: int,
    max_patients: int | None = None,
) -> Grouping:
    """Union-find over same patient, identical array bytes and near-duplicate images (per modality).

    Near-duplicate pairs are merged closest first (Kruskal order: distance, then record ids). With
    ``max_patients``, a pair is *not* merged when the merged group would span more patients than
    that: one picture republished by a few sources makes a small cluster, while long chains of
    merely look-alike images (e.g. synthetic phantoms sharing one anatomy) would otherwise collapse
    whole classes into one group. Refused pairs are counted in the summary and logged.

    Args:
        manifest: with ``record_id``, ``patient_id``, ``modality`` and ``content_sha256``.
        hashes: :func:`hash_records` output (index record_id); None to group by patient only.
        max_distance: Hamming distance threshold for near-duplicates.
        max_patients: cap on the patients one near-duplicate merge may produce; None: no cap.

    Returns:
        A :class:`Grouping`; group ids are ``"g-"`` + 12 hex of the sorted member patient ids'
        SHA-256 (stable across seeds and manifest order).
    """
    m = manifest.sort_values("record_id", kind="stable")
    records = m["record_id"].tolist()
    uf = _UnionFind(["rec:" + r for r in records] + ["pat:" + p for p in m["patient_id"].unique()])
    for rec, pat in zip(records, m["patient_id"]):
        uf.union("rec:" + rec, "pat:" + pat)
    n_exact = 0
    if "content_sha256" in m:
        for _, ids in m.groupby("content_sha256", sort=True)["record_id"]:
            ids = ids.tolist()
            for other in ids[1:]:
                uf.union("rec:" + ids[0], "rec:" + other)
                n_exact += 1
    near: list[tuple[str, str]] = []
    rejected: list[tuple[str, str]] = []
    unhashed: list[str] = []
    if hashes is not None:
        edges: list[tuple[int, str, str]] = []
        for _, sub in m.groupby("modality", sort=True):
            ids = sub["record_id"].tolist()
            hv = [hashes.get(r) for r in ids]
            unhashed.extend(r for r, v in zip(ids, hv) if v is None)
            valid = [(r, v) for r, v in zip(ids, hv) if v is not None]
            edges += [(d, valid[i][0], valid[j][0]) for i, j, d in near_duplicate_edges([v for _, v in valid], max_distance)]
        patients: dict[str, set[str]] = {}
        for rec, pat in zip(records, m["patient_id"]):
            patients.setdefault(uf.find("rec:" + rec), set()).add(pat)
        for _, a, b in sorted(edges):
            ra, rb = uf.find("rec:" + a), uf.find("rec:" + b)
            if ra != rb:
                merged = patients[ra] | patients[rb]
                if max_patients is not None and len(merged) > max_patients:
                    rejected.append((a, b))
                    continue
                uf.union(ra, rb)
                patients[uf.find(ra)] = merged
            near.append((a, b))
    if unhashed:
        log.warning("%d record(s) have a constant image and were not hashed for near-duplicates", len(unhashed))
    if rejected:
        log.warning(
            "%d near-duplicate pair(s) not merged: the group would span more than %s patients (look-alike images, "
            "not copies?), e.g. %s", len(rejected), max_patients, rejected[:3],
        )  # fmt: skip
    roots = {r: uf.find("rec:" + r) for r in records}
    members: dict[str, set[str]] = {}
    for rec, pat in zip(records, m["patient_id"]):
        members.setdefault(roots[rec], set()).add(pat)
    names = {root: "g-" + hashlib.sha256("\n".join(sorted(p)).encode()).hexdigest()[:12] for root, p in members.items()}
    gid = pd.Series({r: names[roots[r]] for r in records}, name="group_id")
    gid.index.name = "record_id"
    return Grouping(gid, near, n_exact, unhashed, rejected)


# --------------------------------------------------------------------------------- selection
def select_subset(
    manifest: pd.DataFrame,
    name: str,
    spec: SubsetSpec,
    require_ids: set[str] | None = None,
) -> pd.DataFrame:
    """The manifest rows of one sub-dataset (modality x sources x classes [x clinical+annotated]).

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
    if spec.sources in ("public", "hospital"):
        sel &= manifest["origin"] == spec.sources
    elif isinstance(spec.sources, list):
        sel &= manifest["source"].isin(spec.sources)
    if require_ids is not None:
        sel &= manifest["record_id"].isin(require_ids)
    out = manifest.loc[sel]
    if out.empty:
        have = manifest.groupby(["modality", "origin", "source", "label"]).size()
        raise DataError(
            f"subsets.{name} selects no records (modality={spec.modality}, sources={spec.sources}, "
            f"classes={spec.classes}{', with clinical indicators and annotations' if require_ids is not None else ''}); "
            f"the manifest has (modality, origin, source, label): {dict(have)}"
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
    out["seed004_subset"] = out["label"].map(SEED004_SUBSETS).fillna("")
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
        DataError: a sub-dataset selects no records or fewer than two groups, or a centre split has no
            test-centre (or no train-centre) records.
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

    selected = {
        name: select_subset(m, name, spec, clinical_ids if name in cfg.clinical_subsets else None)
        for name, spec in subsets.items()
    }
    # smallest first: a sub-dataset is split before any superset of it (CADS before CTHDS), so it gets
    # its own stratified split and the larger one inherits those groups (never the other way round,
    # which could leave the small one without a test part)
    order = sorted(selected, key=lambda n: (selected[n]["group_id"].nunique(), n))
    for name in order:
        rows = selected[name].copy()
        if rows["group_id"].nunique() < 2:
            raise DataError(f"subsets.{name} has {rows['group_id'].nunique()} patient group(s); at least 2 are needed to split")
        rs = _random_state(seed, name)
        if name in cfg.centre_subsets:
            is_test = rows["centre"].isin(centre_set)
            if not is_test.any() or is_test.all():
                raise DataError(
                    f"subsets.{name}: centre split needs records from splits.centre_test={sorted(centre_set)} and "
                    f"from other centres; it has centres {sorted(rows['centre'].unique())}"
                )
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
            log.debug("mixed set %s skipped: none of %s is a sub-dataset", mixed_name, members)
            continue
        if len(present) < len(members):
            log.warning("mixed set %s: %s are not sub-datasets; built from %s", mixed_name, sorted(set(members) - set(present)), present)
        bad = [s for s in present if s in cfg.centre_subsets]
        if bad:
            raise ConfigError(f"splits.mixed.{mixed_name} unions centre-split sub-datasets {bad}; use TTSF sub-datasets")
        union = pd.concat([by_name[s] for s in present]).drop_duplicates("record_id").copy()
        union["subset"] = mixed_name
        pieces.append(union)
        summary[mixed_name] = _subset_summary(union, "union", {"members": present})

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
