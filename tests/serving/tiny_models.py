"""Tiny models for the serving tests: built with the zoo, optionally trained a few steps, registered in
a real (temporary sqlite) MLflow registry exactly as the training stages register them."""

from __future__ import annotations

import numpy as np
import torch

from covidscan.config import ModelsConfig, PreprocessConfig

TINY_MODELS = ModelsConfig.model_validate(
    {
        "cnncf": {"stem_width": 4, "widths_stage1": [8, 8], "width_stage1_b": 8, "widths_stage2": [16, 16], "width_stage2_b": 16,
                  "stride_b": 1, "ths_count": 1, "ths_sens": 0.0},
        "cnnrf_width": 16,
        "csacnet": {"base_width": 2},
    }
)  # fmt: skip
TINY_PRE = PreprocessConfig(xray_size=32, ct_slices=12, ct_size=32, volume_size=32, volume_slices=8, crop_size=32)
LABELS = ["normal", "covid19"]
TARGET_RANGE = {"names": ["wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp"],
                "low": [1.0, 40.0, 5.0, 0.0, 0.0], "high": [20.0, 95.0, 50.0, 5.0, 150.0]}  # fmt: skip
NAMES = {"xray": "covidscan-student-xray", "ct2d": "covidscan-student-ct", "ct3d": "covidscan-csacnet", "ctslice": "covidscan-student-ct-slice",
         "indicators": "covidscan-cnnrf"}  # fmt: skip


def build(role: str, seed: int = 0) -> torch.nn.Module:
    """A tiny untrained model for a serving role (seeded)."""
    from covidscan.models.zoo import build_model

    torch.manual_seed(seed)
    if role == "xray":
        model = build_model("student", TINY_MODELS, input_size=32, class_labels=LABELS, kind="image2d")
    elif role == "ctslice":
        model = build_model("student", TINY_MODELS, input_size=32, class_labels=LABELS, kind="ct_slice2d")
    elif role == "ct2d":
        model = build_model("student", TINY_MODELS, input_size=32, in_channels=12, class_labels=LABELS, kind="ct_stack")
    elif role == "ct3d":
        model = build_model("csacnet", TINY_MODELS, input_size=(8, 32, 32), class_labels=LABELS, kind="ct_volume")
    else:
        model = build_model("cnnrf", TINY_MODELS, input_size=32, kind="lesion_crop", target_range=TARGET_RANGE)
    return model.eval()


def example(model: torch.nn.Module) -> np.ndarray:
    return np.random.default_rng(0).random((1, *model.input_spec.shape), dtype=np.float32)


def register(model: torch.nn.Module, name: str, extra: dict | None = None) -> str:
    """Log and register a model as the training stages do; returns the new version."""
    from covidscan.tracking.registry import log_model
    from covidscan.tracking.runs import stage_run

    with stage_run("distill", None, experiment="serving-tests"):
        info = log_model(model, name.removeprefix("covidscan-"), example(model), registered_name=name, data_version="test",
                         checkpoint={"state_dict": model.state_dict(), "config": model.card.build, **(extra or {})})  # fmt: skip
    return str(info.registered_model_version)


def bright_dark_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-coloured uint8 (n, 3, 32, 32) images: covid19 (1) has a bright blob, normal (0) none."""
    from covidscan.preprocess.xray import pseudo_colour

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    out = np.empty((n, 3, 32, 32), np.uint8)
    for i in range(n):
        img = rng.normal(80, 15, (32, 32))
        if y[i]:
            r, c = rng.integers(6, 26, 2)
            rr, cc = np.mgrid[0:32, 0:32]
            img += 120 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 18.0)
        out[i] = pseudo_colour(np.clip(img, 0, 255).astype(np.uint8), "jet")
    return out, y


def train_xray(steps: int = 40, seed: int = 0) -> torch.nn.Module:
    """A tiny X-ray student trained a few steps to separate blob (covid19) from no blob (normal)."""
    model = build("xray", seed)
    model.open_gates()  # fine-tune the whole network (no stage-wise gate in this tiny test model)
    model.train()
    x, y = bright_dark_images(64, seed)
    xt, yt = torch.from_numpy(x).float() / 255.0, torch.from_numpy(y).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        idx = torch.randint(0, len(xt), (16,), generator=torch.Generator().manual_seed(step))
        out = model(xt[idx])
        logits = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(logits, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def constant(model: torch.nn.Module) -> torch.nn.Module:
    """The same network with its last linear layer zeroed: a constant 0.5 score (AUROC 0.5)."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return model
