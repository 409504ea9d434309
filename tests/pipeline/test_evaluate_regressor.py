"""The evaluate stage's CNNRF part (covidscan.evaluation.experiment_run.evaluate_regressor), fast: a tiny real CNNRF on real
lesion-crop arrays in the layout the preprocess stage writes, 22 test cases (the paper's 20 degrees of freedom)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidscan.config import Params
from covidscan.evaluation.regression import critical_r
from covidscan.models.card import MissingTargetRange, TargetRange
from covidscan.models.cnnrf import CLINICAL_INDICATORS
from covidscan.models.zoo import build_model, save_model
from tests.serving import tiny_models as tm

N_CASES = 22
# the training part's range: narrower than the test table's, so normalising with the table's range differs
TRAIN_RANGE = TargetRange(CLINICAL_INDICATORS, (3.0, 45.0, 10.0, 0.05, 5.0), (12.0, 85.0, 40.0, 0.4, 60.0))


@pytest.fixture
def stage(tmp_path):
    """data/processed lesion crops + data/interim/ingest/clinical.parquet, and the evaluation's inputs pointed at them."""
    from covidscan.evaluation.experiment_run import EvaluationInputs

    processed, ingest = tmp_path / "data" / "processed", tmp_path / "data" / "interim" / "ingest"
    (processed / "lesion_crop").mkdir(parents=True)
    ingest.mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows, clinical = [], []
    for i in range(N_CASES):
        rid = f"c{i:03d}"
        np.save(processed / "lesion_crop" / f"{rid}.npy", rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
        rows.append({"record_id": rid, "label": "covid19", "y": 1, "input_kind": "ct_stack", "crops_path": f"lesion_crop/{rid}.npy",
                     "source": "synthetic", "centre": "c"})  # fmt: skip
        clinical.append({"record_id": rid, **{n: float(v) for n, v in zip(CLINICAL_INDICATORS, rng.uniform([1, 30, 5, 0.0, 0], [16, 95, 50, 0.6, 90]))}})
    clinical_df = pd.DataFrame(clinical)
    clinical_df.to_parquet(ingest / "clinical.parquet")
    inputs = EvaluationInputs.from_ingest(processed, tmp_path / "data" / "splits" / "splits.parquet", ingest, tmp_path / "no_ground_truth.json")
    params = Params(preprocess=tm.TINY_PRE)
    return inputs, params, pd.DataFrame(rows), clinical_df, tmp_path


def _cnnrf(target_range=TRAIN_RANGE):
    import torch

    torch.manual_seed(0)
    return build_model("cnnrf", tm.TINY_MODELS, input_size=32, kind="lesion_crop", target_range=target_range).eval()


def test_significance_per_indicator_with_n_cases_and_the_card_range(stage):
    from covidscan.evaluation.experiment import run_model
    from covidscan.evaluation.experiment_run import evaluate_regressor
    from covidscan.models.zoo import load_model

    inputs, params, records, clinical, tmp = stage
    path = save_model(_cnnrf(), tmp / "models" / "cnnrf.pt")
    model = load_model(path)
    res = evaluate_regressor(model, path, records, params, inputs, tmp / "reports")
    m = res.metrics
    assert m["n_cases"] == N_CASES
    sig = m["significance"]
    for name in CLINICAL_INDICATORS:  # n = cases per indicator: the paper's critical r 0.6524 at alpha 0.001, 20 df
        assert sig[name]["n"] == N_CASES and sig[name]["r_critical"] == pytest.approx(0.6524, abs=5e-5)
        assert sig[name]["significant"] == (abs(sig[name]["r"]) > sig[name]["r_critical"])
        assert sig[name]["r"] == pytest.approx(m["regression"][name]["r"])
    assert sig["pooled"]["pooled"] is True and sig["pooled"]["n"] == 5 * N_CASES
    assert sig["pooled"]["r_critical"] == pytest.approx(critical_r(5 * N_CASES, 0.001))
    assert m["n_significant_indicators"] == sum(sig[n]["significant"] for n in CLINICAL_INDICATORS)
    # the reference is normalised with the model card's training range, not the test table's
    outs = run_model(model, records, inputs.processed_dir, params.preprocess).outputs
    truth = TRAIN_RANGE.normalise(clinical.set_index("record_id").loc[records["record_id"], list(CLINICAL_INDICATORS)].to_numpy(float))
    for j, name in enumerate(CLINICAL_INDICATORS):
        assert m["regression"][name]["mse"] == pytest.approx(float(np.mean((truth[:, j] - outs[:, j]) ** 2)))
    assert m["target_range"]["crp"] == {"min": 5.0, "max": 60.0}
    # the model card: one significance row per indicator (yes/no) and the pooled row labelled as such
    table = next(rows for title, rows in res.tables.items() if title.startswith("Correlation vs the critical r"))
    assert [r["indicator"] for r in table[:5]] == list(CLINICAL_INDICATORS) and table[5]["indicator"].startswith("pooled")
    assert all(isinstance(r["significant"], bool) for r in table)
    assert [r["indicator"] for r in res.tables["Regression indices"]][-1].startswith("pooled")
    assert res.tables["Target range (training part, the model's normalisation)"][4] == {"target": "crp", "min": 5.0, "max": 60.0}


def test_a_cnnrf_without_its_range_is_refused_naming_the_file(stage):
    from covidscan.evaluation.experiment_run import evaluate_regressor
    from covidscan.models.zoo import load_model

    inputs, params, records, _, tmp = stage
    path = save_model(_cnnrf(target_range=None), tmp / "models" / "old-cnnrf.pt", extra={"target_min": [0] * 5, "target_max": [1] * 5})
    with pytest.raises(MissingTargetRange, match="old-cnnrf.pt"):
        evaluate_regressor(load_model(path), path, records, params, inputs, tmp / "reports")
