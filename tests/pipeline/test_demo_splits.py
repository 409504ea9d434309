"""On the demo-scale synthetic dataset, no patient and no near-duplicate group crosses two splits or
folds, and every experiment's test part is large enough to carry a confidence interval."""

from __future__ import annotations

import pytest

from covidscan.config import SynthConfig, load_params
from covidscan.data.ingest import ingest
from covidscan.data.splits import split_manifest
from covidscan.data.synth import generate
from covidscan.validation.tables import read_ingest
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_dataset_splits_never_share_a_patient_or_group(tmp_path, monkeypatch):
    monkeypatch.setenv("COVIDSCAN_SALT", "demo-split-test-salt-0123456789")
    params = load_params(ROOT / "params.yaml", profile="demo")
    raw = tmp_path / "raw"
    generate(SynthConfig(scale="demo", seed=params.synth.seed), raw)
    sources = [s.model_copy(update={"location": str(raw)}) for s in params.data.sources]
    ingest(sources, params.data, tmp_path / "ingest", progress=False)
    tables = read_ingest(tmp_path / "ingest")
    table = split_manifest(
        tables.manifest, tables.root, params.subsets, params.splits, params.run.seed,
        clinical=tables.clinical, annotations=tables.annotations,
    ).table
    assert set(table["subset"]) >= set(params.subsets)
    patients = tables.manifest.set_index("record_id")["patient_id"]
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
