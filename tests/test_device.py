"""The one device rule (covidscan.device): training's run.device and serving's COVIDSCAN_DEVICE."""

from __future__ import annotations

import pytest
import torch

from covidscan.config import OptimConfig, RunConfig
from covidscan.device import resolve_device
from covidscan.errors import ConfigError, CovidscanError, DeviceUnavailable
from covidscan.serving.predictor import Engine
from covidscan.training.loop import train
from tests.training.standins import TinyCNN


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize(("preference", "expected"), [("auto", "cpu"), ("cpu", "cpu")])
def test_without_cuda_auto_and_cpu_run_on_the_cpu(no_cuda, preference, expected):
    assert resolve_device(preference) == torch.device(expected)


@pytest.mark.parametrize(("preference", "expected"), [("auto", "cuda"), ("cuda", "cuda"), ("cpu", "cpu")])
def test_with_cuda_auto_picks_it_and_cpu_stays_on_the_cpu(fake_cuda, preference, expected):
    assert resolve_device(preference) == torch.device(expected)


def test_cuda_without_cuda_is_a_typed_error_naming_the_setting_and_what_was_found(no_cuda):
    with pytest.raises(DeviceUnavailable, match=r"^run\.device is 'cuda' but .*(no CUDA support|no usable GPU)") as err:
        resolve_device("cuda", "run.device")
    assert isinstance(err.value, ConfigError) and isinstance(err.value, CovidscanError)
    assert "'auto'" in str(err.value) and "'cpu'" in str(err.value)


def test_an_unknown_value_is_a_config_error_naming_the_setting():
    with pytest.raises(ConfigError, match="COVIDSCAN_DEVICE is 'gpu'"):
        resolve_device("gpu", "COVIDSCAN_DEVICE")


def test_training_asked_for_cuda_without_it_refuses(no_cuda):
    run = RunConfig(seed=0, device="cuda", num_workers=0)
    with pytest.raises(DeviceUnavailable, match=r"run\.device is 'cuda'"):
        train(TinyCNN(), [], None, optim=OptimConfig(epochs=1, batch_size=2), run=run)


def test_a_service_asked_for_cuda_without_it_refuses_to_start(no_cuda):
    with pytest.raises(DeviceUnavailable, match="COVIDSCAN_DEVICE is 'cuda'"):
        Engine({}, "cuda", device_setting="COVIDSCAN_DEVICE")


def test_a_service_on_auto_falls_back_to_the_cpu(no_cuda):
    assert Engine({}, "auto").device == "cpu"
