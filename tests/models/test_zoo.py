"""The registry: every model by name, its card, a training step reaching every parameter, save/load and
torch.export round trips with identical outputs, the summary and the `covidscan models` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from covidscan.cli import app
from covidscan.config import ModelsConfig, PreprocessConfig
from covidscan.errors import DataError, ModelConfigError
from covidscan.models.card import InputSpec, MissingTargetRange, TargetRange
from covidscan.models.cnncf import CNNCF
from covidscan.models.zoo import build_model, export_model, load_exported, load_model, model_names, save_model, summary_rows

NAMES = ["student", "cnncf", "TS1", "TS2", "TS3", "TS4", "cnnrf", "csacnet", "resnet3d"]


def _inputs(name: str) -> dict:
    if name in ("csacnet", "resnet3d"):
        return {"input_size": (8, 32, 32)}
    return {"input_size": 32}


def _batch(model, n: int = 2) -> torch.Tensor:
    return torch.rand((n, *model.input_spec.shape))


def test_model_names_cover_the_registry():
    assert model_names(ModelsConfig()) == NAMES
    with pytest.raises(ModelConfigError, match="unknown model 'vgg'"):
        build_model("vgg", ModelsConfig(), input_size=32)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_carries_labels_input_spec_threshold(name, small_cfg):
    model = build_model(name, small_cfg(), **_inputs(name))
    spec = model.input_spec
    assert isinstance(spec, InputSpec)
    expected_channels = 1 if name in ("csacnet", "resnet3d") else 3
    assert spec.channels == expected_channels
    assert spec.size == ((8, 32, 32) if name in ("csacnet", "resnet3d") else (32, 32))
    assert model.threshold == 0.5
    card = model.model_card()
    assert card["arch"] == name and card["threshold"] == 0.5
    assert card["input_spec"]["kind"] == {"csacnet": "ct_volume", "resnet3d": "ct_volume", "cnnrf": "lesion_crop"}.get(name, "image2d")
    n_out = 5 if name == "cnnrf" else 2
    assert len(model.class_labels) == n_out
    assert model(_batch(model)).shape == (2, n_out)


def test_build_model_labels_threshold_and_ct_stack(small_cfg):
    model = build_model(
        "student", small_cfg(), input_size=32, in_channels=12, class_labels=["normal", "pneumonia", "covid19"], threshold=0.3
    )
    assert model.class_labels == ("normal", "pneumonia", "covid19")
    assert model.input_spec.kind == "ct_stack" and model.input_spec.shape == (12, 32, 32)
    assert model.threshold == 0.3
    assert model(torch.rand(2, 12, 32, 32)).shape == (2, 3)
    model.threshold = 0.7
    assert model.model_card()["threshold"] == 0.7
    with pytest.raises(ValueError):
        model.threshold = 1.2
    with pytest.raises(ModelConfigError, match="class_labels"):
        build_model("student", small_cfg(), input_size=32, num_classes=2, class_labels=["a", "b", "c"])
    with pytest.raises(ModelConfigError, match="threshold"):
        build_model("student", small_cfg(), input_size=32, threshold=1.5)


@pytest.mark.parametrize("name", NAMES)
def test_a_training_step_reaches_every_parameter(name, small_cfg):
    model = build_model(name, small_cfg(), **_inputs(name))
    model.train()
    x = _batch(model, 3)
    if isinstance(model, CNNCF):
        model.open_gates()
        y = torch.tensor([0, 1, 1])
        logits, aux = model.forward_with_aux(x)
        loss = F.cross_entropy(logits, y) + model.lambda_aux * sum(F.cross_entropy(a, y) for a in aux)
    elif name == "cnnrf":
        loss = F.mse_loss(model(x), torch.rand(3, 5))
    else:
        loss = F.cross_entropy(model(x), torch.tensor([0, 1, 1]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert not missing, f"no gradient reaches {missing}"


def _perturb(model) -> None:
    """Move BN statistics and (for CNNCF) the gate away from their initial values."""
    model.train()
    if isinstance(model, CNNCF):
        model.open_gates()
    with torch.no_grad():
        model(_batch(model, 4))
    if isinstance(model, CNNCF):
        model.gate.reset()
        model.update_gate(0.99)  # counter 1, still closed (ths_count 3)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_identical(name, small_cfg, tmp_path):
    model = build_model(name, small_cfg(), **_inputs(name), threshold=0.42)
    _perturb(model)
    if isinstance(model, CNNCF):
        model.card.gate_opened = False  # what the training loop records; it must survive the round trip
    path = save_model(model, tmp_path / f"{name}.pt", extra={"note": "test"})
    model.eval()
    loaded = load_model(path)
    assert not loaded.training
    x = _batch(model, 3)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.model_card() == model.model_card()
    assert loaded.threshold == 0.42
    if isinstance(model, CNNCF):
        assert loaded.card.gate_opened is False
        assert loaded.gate.count == 1 and not loaded.gate.is_open
        loaded.update_gate(0.99)
        assert loaded.update_gate(0.99) is True
    payload = torch.load(path, weights_only=True)
    assert payload["extra"] == {"note": "test"} and payload["build"]["name"] == name


def test_the_target_range_travels_with_a_regressor(small_cfg, tmp_path):
    names = ("wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp")
    rng = TargetRange(names, (1.0, 40.0, 5.0, 0.0, 0.0), (20.0, 95.0, 50.0, 5.0, 150.0))
    model = build_model("cnnrf", small_cfg(), **_inputs("cnnrf"), target_range=rng.to_dict())
    assert model.card.target_range == rng and model.model_card()["target_range"] == rng.to_dict()
    loaded = load_model(save_model(model, tmp_path / "cnnrf.pt"))
    assert loaded.card.target_range == rng and loaded.card.require_target_range("x") == rng
    np.testing.assert_allclose(rng.denormalise(rng.normalise([[2.0, 50.0, 10.0, 1.0, 30.0]])), [[2.0, 50.0, 10.0, 1.0, 30.0]])
    np.testing.assert_allclose(rng.normalise([[20.0, 40.0, 27.5, 5.0, 150.0]]), [[1.0, 0.0, 0.5, 1.0, 1.0]])
    bare = load_model(save_model(build_model("cnnrf", small_cfg(), **_inputs("cnnrf")), tmp_path / "bare.pt"))
    with pytest.raises(MissingTargetRange, match="bare.pt: the cnnrf model has no target range"):
        bare.card.require_target_range(str(tmp_path / "bare.pt"))
    with pytest.raises(ModelConfigError, match="regressors"):
        build_model("student", small_cfg(), **_inputs("student"), target_range=rng)
    with pytest.raises(ModelConfigError, match="not the outputs"):
        build_model("cnnrf", small_cfg(), **_inputs("cnnrf"), target_range=TargetRange(names[::-1], rng.low, rng.high))
    with pytest.raises(ModelConfigError, match="finite interval"):
        TargetRange(names, rng.high, rng.low)


# One per network class/variant: "cnncf" is "student", TS1/TS2/TS4 are CNNCF like the student and TS3
# (bottleneck); exporting each takes seconds, so the duplicates are not repeated here.
EXPORT_NAMES = ["student", "TS3", "cnnrf", "csacnet", "resnet3d"]


@pytest.mark.parametrize("name", EXPORT_NAMES)
def test_torch_export_round_trip_identical(name, small_cfg, tmp_path):
    model = build_model(name, small_cfg(), **_inputs(name))
    _perturb(model)
    path = export_model(model, tmp_path / f"{name}.pt2")
    assert model.training, "export leaves the model in the mode it found it"
    program, card = load_exported(path)
    model.eval()
    x = _batch(model, 3)  # another batch size than the export example
    with torch.no_grad():
        expected = model(x)
    got = program(x)
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert card == model.model_card()


def test_load_model_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(DataError, match="not a covidscan model checkpoint"):
        load_model(bad)
    with pytest.raises(ModelConfigError, match="build_model"):
        save_model(CNNCF(input_size=64, stem_width=2, widths_stage1=[2, 2], width_stage1_b=2, widths_stage2=[2, 2], width_stage2_b=2), tmp_path / "x.pt")


def test_summary_rows(small_cfg):
    pre = PreprocessConfig(xray_size=64, ct_slices=12, ct_size=32, crop_size=32, volume_slices=8, volume_size=32)
    rows = summary_rows(small_cfg(), pre)
    by_name = {r["name"]: r for r in rows}
    assert list(by_name) == ["student", "student (CT stack)", "TS1", "TS2", "TS3", "TS4", "cnnrf", "csacnet", "resnet3d"]
    for r in rows:
        assert r["error"] is None, r
        assert r["params"] > 0 and r["gflops"] > 0
    assert by_name["student"]["output_shape"] == (1, 2) and by_name["cnnrf"]["output_shape"] == (1, 5)
    assert by_name["student (CT stack)"]["input_shape"] == (12, 32, 32)
    assert by_name["csacnet"]["input_shape"] == (1, 8, 32, 32)
    # the parameter count is the real model's
    real = build_model("TS2", small_cfg(), input_size=64)
    assert by_name["TS2"]["params"] == sum(p.numel() for p in real.parameters())
    # a refused configuration is a row with an error, not a crash
    refused = summary_rows(small_cfg(stride_b=2), pre, names=["TS4"])
    assert refused[0]["error"] and "stride_b" in refused[0]["error"]


def test_cli_models_table(tmp_path):
    params = {
        "models": {
            "cnncf": {"stem_width": 4, "widths_stage1": [8, 8], "width_stage1_b": 8, "widths_stage2": [16, 16], "width_stage2_b": 16, "stride_b": 2},
            "cnnrf_width": 16,
            "csacnet": {"base_width": 2},
        },
        "preprocess": {"xray_size": 64, "ct_slices": 12, "ct_size": 64, "crop_size": 32, "volume_slices": 8, "volume_size": 32},
        "profiles": {"narrow": {"models": {"cnncf": {"stride_b": 1}}}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    runner = CliRunner()
    result = runner.invoke(app, ["models", "--params", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("student", "TS1", "TS4", "cnnrf", "csacnet", "resnet3d", "GFLOPs"):
        assert name in result.output
    assert "refused" in result.output  # TS1/TS4 at 64x64 with stride_b=2
    result = runner.invoke(app, ["models", "--params", str(path), "--profile", "narrow"], terminal_width=200)
    assert result.exit_code == 0 and "refused" not in result.output, result.output
    result = runner.invoke(app, ["models", "--params", str(path), "--profile", "nope"])
    assert result.exit_code != 0


def test_cli_models_lists_each_network_as_the_stages_build_it(tmp_path):
    """The students and teachers show the classes the training stages give them (normal, pneumonia,
    covid19: output (1, 3), not a generic (1, 2)), with the input kind of their task."""
    from covidscan.config import load_params
    from covidscan.training.tasks import TASKS, build_classifier, build_volume_classifier

    params = {
        "models": {"cnncf": {"stem_width": 4, "widths_stage1": [8, 8], "width_stage1_b": 8, "widths_stage2": [16, 16], "width_stage2_b": 16, "stride_b": 1},
                   "cnnrf_width": 16, "csacnet": {"base_width": 2}},
        "preprocess": {"xray_size": 64, "ct_slices": 12, "ct_size": 64, "crop_size": 32, "volume_slices": 8, "volume_size": 32},
    }  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    p = load_params(path)
    result = CliRunner().invoke(app, ["models", "--params", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in result.output.splitlines() if line.count("│") > 2}
    for task in TASKS:
        for name in ("student", *p.models.teachers):
            model = build_classifier(name, p.models, task, p.preprocess)  # what train_teacher / distill train
            kind, shape, classes, _, _, output = lines[f"{name} ({task})"]
            assert classes == ", ".join(model.card.class_labels)
            assert output == str((1, len(model.card.class_labels))) and len(model.card.class_labels) >= 3
            assert kind == TASKS[task]["card_kind"] and shape == "x".join(map(str, model.input_spec.shape))
    csacnet = build_volume_classifier("csacnet", p.models, p.preprocess)
    assert lines["csacnet"][2] == ", ".join(csacnet.card.class_labels) and lines["csacnet"][5] == "(1, 2)"
    assert lines["cnnrf"][0] == "lesion_crop" and lines["cnnrf"][5] == "(1, 5)"


@pytest.mark.parametrize("name,input_size", [("student", 64), ("TS3", 64), ("csacnet", (8, 32, 32)), ("resnet3d", (8, 32, 32))])
def test_gradcam_targets_the_last_stage(name, input_size, small_cfg):
    from monai.visualize import GradCAM

    model = build_model(name, small_cfg(), input_size=input_size).eval()
    assert model.target_layer in dict(model.named_modules())
    cam = GradCAM(nn_module=model, target_layers=model.target_layer)
    x = _batch(model)
    heat = cam(x)
    assert heat.shape == (2, 1, *model.input_spec.size)
    assert torch.isfinite(heat).all()


def test_the_empty_marker_of_an_untrained_model_is_refused_by_name(tmp_path):
    from covidscan.errors import NoModelTrained
    from covidscan.models.zoo import is_empty_model, load_model, write_empty_model

    path = write_empty_model(tmp_path / "models" / "student-ct-slice.pt")
    assert is_empty_model(path) and path.stat().st_size == 0
    with pytest.raises(NoModelTrained, match="student-ct-slice.pt: no model was trained"):
        load_model(path)
