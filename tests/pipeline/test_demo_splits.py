"""On the demo-scale synthetic dataset (the shared demo repro of tests/pipeline/conftest.py), no patient
and no near-duplicate group crosses two splits or folds, and every experiment's test part is large
enough to carry a confidence interval."""

from __future__ import annotations

import pandas as pd
import pytest

from covidscan.config import load_params

pytestmark = pytest.mark.slow


def test_demo_dataset_splits_never_share_a_patient_or_group(demo_repro):
    repo, _ = demo_repro
    params = load_params(repo / "params.yaml", profile="demo")
    table = pd.read_parquet(repo / "data/splits/splits.parquet")
    manifest = pd.read_parquet(repo / "data/interim/ingest/manifest.parquet")
    assert set(table["subset"]) >= set(params.subsets)
    patients = manifest.set_index("record_id")["patient_id"]
    table = table.assign(patient_id=table["record_id"].map(patients))
    for subset, rows in table.groupby("subset"):
        for key in ("patient_id", "group_id"):
            parts = rows.groupby(key)["part"].nunique()
            assert (parts == 1).all(), f"{subset}: a {key} is in both train-val and test"
            trainval = rows[rows["part"] == "trainval"]
            folds = trainval.groupby(key)["fold"].nunique()
            assert (folds == 1).all(), f"{subset}: a {key} is in two folds"
    # test parts that can carry a CI: >= 30 cases and >= 10 per class; CAVS >= 20 (the paper's has 20)
    test = table[table["part"] == "test"]
    for name, spec in params.experiments.items():
        rows = test[test["subset"].isin(spec.subsets) & test["label"].isin([*spec.positive, *spec.negative])].drop_duplicates("record_id")
        positives = int(rows["label"].isin(spec.positive).sum())
        if not spec.negative:  # CA: lesion crops + indicators of covid19 cases
            assert len(rows) >= 20, f"experiment {name}: {len(rows)} test cases"
            continue
        assert len(rows) >= 30 and positives >= 10 and len(rows) - positives >= 10, (
            f"experiment {name}: {len(rows)} test cases, {positives} positive"
        )
