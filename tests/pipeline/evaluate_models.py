"""Small saved models in the training stages' format (zoo.save_model), for the evaluate stage's tests."""

from __future__ import annotations

from pathlib import Path

import torch

from covidscan.config import Params
from covidscan.models.card import TargetRange
from covidscan.models.cnnrf import CLINICAL_INDICATORS
from covidscan.models.zoo import build_model, save_model

CLASSES = ["covid19", "normal", "pneumonia"]
INDICATORS_RANGE = TargetRange(CLINICAL_INDICATORS, (2.0, 40.0, 5.0, 0.02, 1.0), (15.0, 90.0, 45.0, 0.5, 80.0))


def write_models(params: Params, models_dir: Path, seed: int = 0) -> dict[str, Path]:
    """student-xray, student-ct, csacnet, baselines/resnet3d (untrained, seeded) and cnnrf with the indicators' min/max on its card."""
    torch.manual_seed(seed)
    m, p = params.models, params.preprocess
    models = {
        "student-xray": build_model("student", m, input_size=p.xray_size, class_labels=CLASSES, threshold=0.5, kind="image2d"),
        "student-ct": build_model("student", m, input_size=p.ct_size, in_channels=p.ct_slices, class_labels=[*CLASSES, "influenza"], threshold=0.4, kind="ct_stack"),
        "csacnet": build_model("csacnet", m, input_size=(p.volume_slices, p.volume_size, p.volume_size), class_labels=["non-covid19", "covid19"], threshold=0.5, kind="ct_volume"),
        "cnnrf": build_model("cnnrf", m, input_size=p.crop_size, kind="lesion_crop", target_range=INDICATORS_RANGE),
        # experiment S's baselines folder (the SVM and RF are optional: the baselines stage skips them on one class)
        "baselines/resnet3d": build_model("resnet3d", m, input_size=(p.volume_slices, p.volume_size, p.volume_size), class_labels=["non-covid19", "covid19"], threshold=0.5, kind="ct_volume"),
    }
    out = {}
    for name, model in models.items():
        model.eval()
        out[name] = save_model(model, models_dir / f"{name}.pt")
    return out
