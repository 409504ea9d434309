"""Preprocessing cache: a cold run (decode, window, resample) vs a warm rerun (cache hits) in one process.

Builds an ingest-like folder of N CT volumes at a realistic size (int16 HU, SLICES x 512 x 512) and
runs `preprocess_manifest` twice with the paper's preprocessing parameters. Prints both wall times and
their ratio. Usage: python benchmarks/preprocess_cache.py [--n 4] [--slices 120]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from covidscan.config import PreprocessConfig
from covidscan.preprocess.cache import preprocess_manifest


def make_ingest(root: Path, n: int, slices: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        hu = rng.integers(-1024, 400, size=(slices, 512, 512), dtype=np.int16)
        rel = f"arrays/ct{i}.npy"
        (root / "arrays").mkdir(parents=True, exist_ok=True)
        np.save(root / rel, hu)
        rows.append(dict(record_id=f"r-{i:016x}", modality="ct", kind="ct_volume", label="covid19", array_path=rel,
                         spacing_slice=1.25, content_sha256=f"{i:064x}"))
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--slices", type=int, default=120)
    args = ap.parse_args()
    cfg = PreprocessConfig()  # the paper's values: 300 x 512 x 512 stacks, 5 mm volumes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = make_ingest(root / "ingest", args.n, args.slices)
        times = []
        for label in ("cold", "warm"):
            start = time.perf_counter()
            index = preprocess_manifest(manifest, root / "ingest", cfg, root / "processed", cache_dir=root / "cache",
                                        progress=False, annotations=pd.DataFrame())
            times.append(time.perf_counter() - start)
            print(f"{label}: {times[-1]:.2f} s  (hits {index.attrs['hits']}, misses {index.attrs['misses']})")
    print(f"{args.n} CT volumes of {args.slices}x512x512: warm rerun is {times[0] / times[1]:.1f}x faster than cold")


if __name__ == "__main__":
    main()
