"""The indicators role (CNNRF) without a server: a bundle keeps the model card's training range and the
predictor answers de-normalised values with it; a CNNRF without its range cannot be bundled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from covidscan.models.card import MissingTargetRange, TargetRange
from covidscan.models.zoo import build_model, save_model
from covidscan.serving.bundle import read_bundle, write_bundle
from tests.serving import tiny_models as tm


def test_indicators_are_denormalised_with_the_model_card_range(tmp_path):
    from covidscan.serving.predictor import Predictor

    path = save_model(tm.build("indicators", seed=2), tmp_path / "cnnrf.pt")
    write_bundle(path, tmp_path / "bundle", role="indicators", name="covidscan-cnnrf", version="4", alias="champion", preprocess=tm.TINY_PRE)
    assert read_bundle(tmp_path / "bundle").card["target_range"] == tm.TARGET_RANGE
    crops = []
    for i in range(2):
        crops.append(tmp_path / f"crop{i}.png")
        cv2.imwrite(str(crops[-1]), np.random.default_rng(i).integers(0, 256, (40, 40), dtype=np.uint8))
    body = Predictor({"indicators": tmp_path / "bundle"}, device="cpu").indicators(crops)
    rng = TargetRange.of(tm.TARGET_RANGE)
    normalised = np.array([body["normalised"][n] for n in rng.names])
    raw = np.array([body["raw_units"][n] for n in rng.names])
    np.testing.assert_allclose(raw, np.asarray(rng.low) + normalised * (np.asarray(rng.high) - np.asarray(rng.low)), rtol=1e-6)
    assert body["target_range"]["crp"] == {"min": 0.0, "max": 150.0} and body["n_crops"] == 2
    assert body["model"]["version"] == "4"


def test_a_cnnrf_without_its_range_cannot_be_bundled(tmp_path):
    bare = build_model("cnnrf", tm.TINY_MODELS, input_size=32, kind="lesion_crop")
    path = save_model(bare, tmp_path / "old-cnnrf.pt", extra={"target_min": [0.0] * 5, "target_max": [1.0] * 5})
    with pytest.raises(MissingTargetRange, match=r"covidscan-cnnrf v1 \(.*old-cnnrf\.pt\)"):
        write_bundle(path, tmp_path / "bundle", role="indicators", name="covidscan-cnnrf", version="1", alias="", preprocess=tm.TINY_PRE)
    assert not (tmp_path / "bundle" / "model.pt").exists()
