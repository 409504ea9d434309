"""Content-addressed cache of preprocessed arrays, and the manifest -> preprocessed-arrays step.

Cache key = sha256 of (the input array's content hash, the output kind, the preprocessing parameters
that shape that output, any per-record extras such as the slice spacing or the annotation boxes, and
:data:`PREPROCESS_VERSION`). Entries live in ``<cache_dir>/<key[:2]>/<key>.npy``; every write goes to a
temporary file in the same folder and is renamed into place, so a crash never leaves half an array
under a valid key. A rerun with unchanged inputs and parameters loads and resamples nothing; changing
a parameter that matters to one output (say ``ct_slices``) recomputes only that output.

Output folder written by :func:`preprocess_manifest` (plain ``.npy``, loaders ``np.load(mmap_mode="r")``)::

    <out_dir>/
      index.parquet        one row per record (columns: INDEX_COLUMNS)
      crops.parquet        one row per lesion crop (columns: CROP_COLUMNS)
      input_specs.json     {input_kind: InputSpec.to_dict()} + the code version
      xray/<id>.npy        uint8 (3, xray_size, xray_size)  RGB pseudo-colour
      ct_slice2d/<id>.npy  uint8 (3, ct_size, ct_size)      RGB pseudo-colour
      grey/<id>.npy        uint8 (size, size)               the grey image before colouring (2D kinds)
      ct_stack/<id>.npy    uint8 (ct_slices, ct_size, ct_size)
      ct_volume/<id>.npy   float16 (volume_slices, volume_size, volume_size) in [0, 1]
      lesion_crop/<id>.npy uint8 (n_crops, 3, crop_size, crop_size) RGB pseudo-colour

Paths in the parquet files are relative to ``out_dir``. ``<id>`` is the record id when it is a safe
file name, else ``r-`` + the first 24 hex digits of its sha256. Output files are hard links to the
cache entries where the file system allows it (else copies): never open them for writing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.preprocess import ct as ct_mod
from covidscan.preprocess import xray as xray_mod
from covidscan.preprocess.spec import INPUT_KINDS, input_spec

log = logging.getLogger(__name__)

# Bump when a change in this package changes any output array: every cache key changes with it.
PREPROCESS_VERSION = "covidscan.preprocess/1"

INDEX_COLUMNS = [
    "record_id",
    "modality",
    "kind",
    "label",
    "input_kind",  # what image_path holds: xray | ct_slice2d | ct_stack
    "image_path",  # the 2D framework's input
    "grey_path",  # 2D kinds: uint8 grey image before pseudo-colouring; "" for ct_volume
    "volume_path",  # ct_volume: the 3D network's input; "" otherwise
    "crops_path",  # lesion crops from the adjudicated boxes; "" when the record has none
    "n_crops",
    "input_sha256",
]
CROP_COLUMNS = ["record_id", "crop_index", "slice_index", "x0", "y0", "x1", "y1", "crops_path"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OUTPUT_DIRS = ("xray", "ct_slice2d", "grey", "ct_stack", "ct_volume", "lesion_crop")


# ------------------------------------------------------------------------------------ hashing
def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def cache_key(input_digest: str, output: str, params: Mapping[str, Any], extra: Mapping[str, Any] | None = None, version: str = PREPROCESS_VERSION) -> str:
    """The cache key of one output: sha256 over its input hash, output name, parameters, extras, version."""
    payload = {"input": input_digest, "output": output, "params": dict(params), "extra": dict(extra or {}), "version": version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- atomic files
def save_npy_atomic(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a plain .npy at ``path`` via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def place_file(src: Path, dst: Path, link: Literal["hardlink", "copy"] = "hardlink") -> Path:
    """Put ``src`` at ``dst`` atomically: a hard link when possible (same inode), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and link == "hardlink" and os.path.samefile(src, dst):
        return dst
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if link == "hardlink":
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


# ------------------------------------------------------------------------------------- cache
class ArrayCache:
    """A folder of .npy arrays addressed by key; counts hits and misses.

    Args:
        root: the cache folder (created on first write), e.g. ``build/cache/preprocess``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists)."""
        return self.root / key[:2] / f"{key}.npy"

    def lookup(self, key: str, shape: tuple[int, ...] | None = None, dtype: str | None = None) -> Path | None:
        """The entry's path when present and readable with the expected shape/dtype, else None."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            log.warning("cache entry %s unreadable (%s); recomputing", path, err)
            return None
        if (shape is not None and tuple(arr.shape) != tuple(shape)) or (dtype is not None and str(arr.dtype) != dtype):
            log.warning("cache entry %s has %s %s, expected %s %s; recomputing", path, arr.dtype, arr.shape, dtype, shape)
            return None
        return path

    def put(self, key: str, array: np.ndarray) -> Path:
        """Store ``array`` under ``key`` (atomic)."""
        return save_npy_atomic(self.path(key), array)

    def get_or_compute(
        self,
        keys: Mapping[str, str],
        compute: Callable[[], Mapping[str, np.ndarray]],
        expect: Mapping[str, tuple[tuple[int, ...] | None, str | None]] | None = None,
    ) -> dict[str, Path]:
        """Paths of several outputs computed together; ``compute`` runs only when one is missing.

        Args:
            keys: output name -> cache key.
            compute: returns output name -> array for every name in ``keys``.
            expect: output name -> (shape or None, dtype or None) a cached entry must have.
        """
        expect = expect or {}
        found = {name: self.lookup(key, *expect.get(name, (None, None))) for name, key in keys.items()}
        if all(p is not None for p in found.values()):
            self.hits += len(keys)
            return {name: p for name, p in found.items() if p is not None}
        self.misses += len(keys)
        arrays = compute()
        return {name: self.put(key, arrays[name]) for name, key in keys.items()}


# ------------------------------------------------------------------------- manifest -> arrays
def _file_id(record_id: str) -> str:
    if _SAFE_NAME.match(record_id):
        return record_id
    return "r-" + hashlib.sha256(record_id.encode()).hexdigest()[:24]


def _boxes_by_record(annotations: pd.DataFrame | None) -> dict[str, list[tuple[int, float, float, float, float]]]:
    """Adjudicated boxes per record, in a stable order: (slice_index, x0, y0, x1, y1)."""
    if annotations is None or annotations.empty:
        return {}
    needed = {"record_id", "reader", "slice_index", "x0", "y0", "x1", "y1"}
    missing = needed - set(annotations.columns)
    if missing:
        raise DataError(f"annotations: missing columns {sorted(missing)} (expected {sorted(needed)})")
    adj = annotations[annotations["reader"] == "adjudicated"]
    out: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for rec, group in adj.groupby("record_id", sort=True):
        boxes = sorted((int(r.slice_index), float(r.x0), float(r.y0), float(r.x1), float(r.y1)) for r in group.itertuples(index=False))
        out[str(rec)] = boxes
    return out


def _crops(array: np.ndarray, kind: str, boxes: list[tuple[int, float, float, float, float]], cfg: PreprocessConfig, what: str) -> np.ndarray:
    """Lesion crops (n, 3, crop, crop) uint8 from the stored array and its adjudicated boxes."""
    crops = []
    grey_cache: dict[int, np.ndarray] = {}
    for slice_index, *box in boxes:
        if slice_index not in grey_cache:
            if kind == "ct_volume":
                if not 0 <= slice_index < array.shape[0]:
                    raise DataError(f"{what}: annotation slice_index {slice_index} outside the volume's {array.shape[0]} slices")
                grey_cache[slice_index] = ct_mod.ct_slice_grey(np.asarray(array[slice_index]), cfg)
            else:
                if slice_index != 0:
                    raise DataError(f"{what}: annotation slice_index {slice_index} on a 2D image (expected 0)")
                grey_cache[slice_index] = xray_mod.normalise_to_uint8(array, cfg.xray_normalise, cfg.xray_percentiles, what=what)
        crops.append(xray_mod.lesion_crop(grey_cache[slice_index], tuple(box), cfg, what=what))
    return np.stack(crops)


def preprocess_manifest(
    manifest_df: pd.DataFrame,
    ingest_dir: str | Path,
    cfg: PreprocessConfig,
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    annotations: pd.DataFrame | None = None,
    link: Literal["hardlink", "copy"] = "hardlink",
    progress: bool = True,
    workers: int = 1,
) -> pd.DataFrame:
    """Preprocess every manifest record into plain .npy files under ``out_dir`` (cached), plus an index.

    Args:
        manifest_df: ingest's manifest (needs record_id, modality, kind, label, array_path, spacing_slice;
            content_sha256 is used as the input hash when present, else the array is hashed).
        ingest_dir: the folder ``array_path`` is relative to (``data/interim/ingest``).
        cfg: preprocessing parameters.
        out_dir: output folder (``data/processed``); see the module docstring for its layout.
        cache_dir: the cache folder; the pipeline passes ``build/cache/preprocess`` (outside the DVC
            outs, so it survives ``dvc repro -f``). None: ``<out_dir>/.cache``.
        annotations: ingest's annotations table; default: ``<ingest_dir>/annotations.parquet`` when it
            exists. Only ``reader == "adjudicated"`` boxes become lesion crops.
        link: how output files are made from cache entries (hard link, falling back to a copy).
        progress: show a rich progress bar.
        workers: processes working on records in parallel (1: in this process). Each record is
            independent and every write is atomic, so workers only share the cache folder.

    Returns:
        The index (also written to ``<out_dir>/index.parquet``); ``df.attrs`` holds cache ``hits`` and
        ``misses`` counted per output array.

    Raises:
        DataError: a missing array file, an array of the wrong shape, an unknown kind, a CT volume
            without slice spacing, or an annotation box outside its image.
    """
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir)
    cache = ArrayCache(cache_dir if cache_dir is not None else out_dir / ".cache")
    needed = {"record_id", "modality", "kind", "label", "array_path"}
    missing = needed - set(manifest_df.columns)
    if missing:
        raise DataError(f"manifest: missing columns {sorted(missing)}")
    if manifest_df["record_id"].duplicated().any():
        dup = manifest_df.loc[manifest_df["record_id"].duplicated(), "record_id"].iloc[0]
        raise DataError(f"manifest: record_id {dup!r} appears more than once")
    if annotations is None and (ingest_dir / "annotations.parquet").is_file():
        annotations = pd.read_parquet(ingest_dir / "annotations.parquet")
    boxes_by_record = _boxes_by_record(annotations)
    unknown = sorted(set(boxes_by_record) - set(manifest_df["record_id"].astype(str)))
    if unknown:
        log.warning("%d annotated record(s) are not in the manifest (first: %s); their boxes are ignored", len(unknown), unknown[0])

    jobs = [(rec, boxes_by_record.get(str(rec["record_id"]), [])) for rec in manifest_df.to_dict("records")]
    results: list[tuple[dict[str, Any], list[dict[str, Any]], int, int]] = []
    if workers <= 1:
        iterator: Any = jobs
        if progress:
            from rich.progress import track

            iterator = track(jobs, description="Preprocessing", total=len(jobs))
        for rec, boxes in iterator:
            results.append(_preprocess_record(rec, boxes, ingest_dir, out_dir, cache.root, cfg, link))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: OpenCV's thread pool (and torch's, when loaded) do not survive a fork safely
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_preprocess_record, rec, boxes, ingest_dir, out_dir, cache.root, cfg, link) for rec, boxes in jobs]
            waiting: Any = futures
            if progress:
                from rich.progress import track

                waiting = track(futures, description=f"Preprocessing ({workers} workers)", total=len(futures))
            try:
                results = [f.result() for f in waiting]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    rows = [r[0] for r in results]
    crop_rows = [c for r in results for c in r[1]]
    cache.hits, cache.misses = sum(r[2] for r in results), sum(r[3] for r in results)

    index = pd.DataFrame(rows, columns=INDEX_COLUMNS).astype({"n_crops": "int64"})
    crops = pd.DataFrame(crop_rows, columns=CROP_COLUMNS).astype({"crop_index": "int64", "slice_index": "int64"})
    _write_parquet_atomic(index, out_dir / "index.parquet")
    _write_parquet_atomic(crops, out_dir / "crops.parquet")
    specs_json = {"version": PREPROCESS_VERSION, "specs": {k: input_spec(k, cfg).to_dict() for k in INPUT_KINDS}}
    tmp = out_dir / f".input_specs.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(specs_json, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / "input_specs.json")
    _remove_stale(out_dir, index)
    log.info("preprocessed %d records into %s (cache: %d hits, %d misses)", len(index), out_dir, cache.hits, cache.misses)
    index.attrs.update({"hits": cache.hits, "misses": cache.misses})
    return index


def _preprocess_record(
    rec: dict[str, Any],
    boxes: list[tuple[int, float, float, float, float]],
    ingest_dir: Path,
    out_dir: Path,
    cache_root: Path,
    cfg: PreprocessConfig,
    link: Literal["hardlink", "copy"],
) -> tuple[dict[str, Any], list[dict[str, Any]], int, int]:
    """One manifest record -> (index row, crop rows, cache hits, cache misses). Runs in a worker too."""
    cache = ArrayCache(cache_root)
    specs = {k: input_spec(k, cfg) for k in ("xray", "ct_slice2d", "ct_stack", "ct_volume", "lesion_crop")}
    crop_rows: list[dict[str, Any]] = []
    rid = str(rec["record_id"])
    what = f"record {rid}"
    kind = str(rec["kind"])
    fid = _file_id(rid)
    src = ingest_dir / str(rec["array_path"])
    if not src.is_file():
        raise DataError(f"{what}: array file {src} not found")

    @functools.cache
    def load() -> np.ndarray:  # opened (memory-mapped) only when some output is missing from the cache
        return np.load(src, mmap_mode="r", allow_pickle=False)

    given = rec.get("content_sha256")
    sha = given if isinstance(given, str) and given else array_digest(load())
    row: dict[str, Any] = {
        "record_id": rid,
        "modality": str(rec["modality"]),
        "kind": kind,
        "label": str(rec["label"]),
        "grey_path": "",
        "volume_path": "",
        "crops_path": "",
        "n_crops": 0,
        "input_sha256": sha,
    }
    if kind in ("xray", "ct_slice2d"):
        spec = specs[kind]
        side = spec.stored_shape[-1]
        grey_params = {k: v for k, v in spec.params.items() if k != "colormap"}
        keys = {"image": cache_key(sha, kind, spec.params), "grey": cache_key(sha, f"{kind}/grey", grey_params)}

        def compute_2d() -> dict[str, np.ndarray]:
            grey = xray_mod.grey_2d(np.asarray(load()), cfg, side, what=what)
            return {"grey": grey, "image": xray_mod.pseudo_colour(grey, cfg.colormap)}

        paths = cache.get_or_compute(keys, compute_2d, {"image": (spec.stored_shape, spec.dtype), "grey": ((side, side), "uint8")})
        row["input_kind"] = kind
        row["image_path"] = str(place_file(paths["image"], out_dir / kind / f"{fid}.npy", link).relative_to(out_dir))
        row["grey_path"] = str(place_file(paths["grey"], out_dir / "grey" / f"{fid}.npy", link).relative_to(out_dir))
    elif kind == "ct_volume":
        spacing = float(rec.get("spacing_slice", float("nan")))
        sspec, vspec = specs["ct_stack"], specs["ct_volume"]
        stack = cache.get_or_compute(
            {"a": cache_key(sha, "ct_stack", sspec.params)},
            lambda: {"a": ct_mod.ct_stack(np.asarray(load()), cfg, what=what)},
            {"a": (sspec.stored_shape, sspec.dtype)},
        )["a"]
        volume = cache.get_or_compute(
            {"a": cache_key(sha, "ct_volume", vspec.params, {"spacing_slice": round(spacing, 6)})},
            lambda: {"a": ct_mod.ct_volume(np.asarray(load()), spacing, cfg, what=what)},
            {"a": (vspec.stored_shape, vspec.dtype)},
        )["a"]
        row["input_kind"] = "ct_stack"
        row["image_path"] = str(place_file(stack, out_dir / "ct_stack" / f"{fid}.npy", link).relative_to(out_dir))
        row["volume_path"] = str(place_file(volume, out_dir / "ct_volume" / f"{fid}.npy", link).relative_to(out_dir))
    else:
        raise DataError(f"{what}: unknown kind {kind!r}; expected xray, ct_volume or ct_slice2d")

    if boxes:
        cspec = specs["lesion_crop"]
        crop_path = cache.get_or_compute(
            {"a": cache_key(sha, f"lesion_crop/{kind}", cspec.params, {"boxes": boxes})},
            lambda: {"a": _crops(load(), kind, boxes, cfg, what)},
            {"a": ((len(boxes), *cspec.stored_shape), cspec.dtype)},
        )["a"]
        rel = str(place_file(crop_path, out_dir / "lesion_crop" / f"{fid}.npy", link).relative_to(out_dir))
        row["crops_path"], row["n_crops"] = rel, len(boxes)
        for i, (s, x0, y0, x1, y1) in enumerate(boxes):
            crop_rows.append({"record_id": rid, "crop_index": i, "slice_index": s, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "crops_path": rel})
    return row, crop_rows, cache.hits, cache.misses


def _write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _remove_stale(out_dir: Path, index: pd.DataFrame) -> None:
    """Delete output .npy files no record refers to any more (records dropped from the manifest)."""
    keep = {p for col in ("image_path", "grey_path", "volume_path", "crops_path") for p in index[col] if p}
    for sub in _OUTPUT_DIRS:
        folder = out_dir / sub
        if folder.is_dir():
            for f in folder.glob("*.npy"):
                if str(f.relative_to(out_dir)) not in keep:
                    f.unlink()
