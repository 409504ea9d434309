"""Groups of records that must stay on one side of every split: same patient, identical stored array,
or near-duplicate image (step 1 of :mod:`covidscan.data.splits`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from covidscan.errors import DataError

log = logging.getLogger(__name__)

HASH_BITS = 64


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
