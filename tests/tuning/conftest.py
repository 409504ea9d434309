"""A tiny project for tuning tests: preprocessed X-ray arrays (16x16), a splits table, a params.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from covidscan.config import parse_params

SRC = Path(__file__).resolve().parents[2] / "src"

TINY = {
    "run": {"num_workers": 0, "seed": 3},
    "preprocess": {"xray_size": 16, "ct_slices": 3, "ct_size": 16},
    "models": {"cnncf": {"stem_width": 2, "widths_stage1": [4, 4], "width_stage1_b": 4, "widths_stage2": [4, 4], "width_stage2_b": 4,
                         "stride_a": 2, "stride_b": 1, "ths_sens": 0.0, "ths_count": 1}},
    "train": {"classifier": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0}},
    "tune": {"n_trials": 6, "targets": ["student-xray"], "folds": 2, "epochs": 2, "pruner_startup_trials": 1, "pruner_warmup_steps": 0,
             "sampler_startup_trials": 2, "heartbeat_seconds": 1, "grace_seconds": 30, "poll_seconds": 0.2, "distill": False,
             "space": {"Q": [1, 1], "L": [0, 1], "M": [1, 2], "N": [1, 1], "width_scale": [0.5, 1.0], "ths_count": [1, 1], "ths_sens": [0.0, 0.3]}},
}  # fmt: skip


def write_project(root: Path, raw: dict, n_per_class: int = 6) -> dict[str, list[str]]:
    """Write data/processed (index + arrays) and data/splits for XMDS; returns record ids by part."""
    rng = np.random.default_rng(0)
    rows, splits = [], []
    parts: dict[str, list[str]] = {"trainval": [], "test": []}
    (root / "data/processed/xray").mkdir(parents=True, exist_ok=True)
    (root / "data/splits").mkdir(parents=True, exist_ok=True)
    i = 0
    for y, label in enumerate(("normal", "pneumonia", "covid19")):
        for k in range(n_per_class):
            rid = f"r{i:03d}"
            part = "test" if k >= n_per_class - 2 else "trainval"
            fold = -1 if part == "test" else k % 2
            x = rng.integers(0, 60, (3, 16, 16)) + (120 if label == "covid19" else 0)
            np.save(root / f"data/processed/xray/{rid}.npy", x.astype(np.uint8))
            rows.append({"record_id": rid, "label": label, "input_kind": "xray", "image_path": f"xray/{rid}.npy"})
            splits.append({"record_id": rid, "subset": "XMDS", "part": part, "fold": fold, "binary_label": int(label == "covid19"), "group_id": f"g-{rid}"})
            parts[part].append(rid)
            i += 1
    pd.DataFrame(rows).to_parquet(root / "data/processed/index.parquet", index=False)
    pd.DataFrame(splits).to_parquet(root / "data/splits/splits.parquet", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return parts


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tmp project (cwd) with tiny data, a real sqlite MLflow store and the journal storage default."""
    parts = write_project(tmp_path, TINY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("COVIDSCAN_ARTIFACT_ROOT", (tmp_path / "mlartifacts").as_uri())
    monkeypatch.setenv("OPTUNA_STORAGE", str(tmp_path / "build/optuna/journal.log"))
    monkeypatch.setenv("COVIDSCAN_REPRO_ID", "tune-test")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "parts.yaml").write_text(yaml.safe_dump(parts))
    return tmp_path


def params(overrides: dict | None = None):
    raw = TINY
    if overrides:
        from covidscan.config import _deep_merge

        raw = _deep_merge(TINY, overrides)
    return parse_params(raw)
