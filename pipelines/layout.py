"""The stages' default paths: the layout dvc.yaml names in its ``vars: paths``, for running a stage by hand.

``dvc.yaml`` passes every path to every stage as an argument (``--processed ${paths.processed}``, as
DVC's example-get-started passes ``data/data.xml``); these defaults let ``python -m pipelines.<stage>``
run with none. They are the only data paths written in ``pipelines/``: ``tests/test_stage_paths.py``
fails when they differ from dvc.yaml's ``paths``, when a stage's ``cmd`` leaves out one of its path
options, or when another stage module names a ``data/`` (or ``models/``, ``metrics/``, ``reports/``) path.
"""

from __future__ import annotations

from pathlib import Path

# dvc.yaml `vars: paths` (one constant per key, the key in capitals)
RAW = Path("data/raw")  # every source's folder: the synthetic set and real ones (`dvc add` / `dvc import-url`); ingest's dependency
RAW_SYNTHETIC = Path("data/raw/synthetic")  # the synthetic hybrid DICOM set (stage synth)
INGEST = Path("data/interim/ingest")  # de-identified arrays and the ingest tables (stage ingest)
SPLITS = Path("data/splits")  # the split table and its summary (stage split)
PROCESSED = Path("data/processed")  # preprocessed arrays and their index (stage preprocess)
MODELS = Path("models")  # trained models
TEACHERS = Path("models/teachers")  # the teachers' fold models, out-of-fold predictions, CV weights
METRICS = Path("metrics")  # DVC metrics
REPORTS = Path("reports")  # reports and figures
CACHE = Path("build/cache")  # caches outside the DVC outs (they survive `dvc repro -f`)
CHECKPOINTS = Path("build/checkpoints")  # resumable training checkpoints

# the input options several stages share (pipelines.add_path_options): name -> (flag, default, help)
INPUT_OPTIONS: dict[str, tuple[str, Path, str]] = {
    "ingest": ("--ingest", INGEST, "the ingest folder (manifest, clinical, annotations, reads, arrays)"),
    "splits": ("--splits", SPLITS / "splits.parquet", "the split table"),
    "processed": ("--processed", PROCESSED, "the preprocess stage's folder (index.parquet and the arrays)"),
    "teachers": ("--teachers", TEACHERS, "the teachers' folder (<task>/<TS>-f<k>.pt, cv.json)"),
}
