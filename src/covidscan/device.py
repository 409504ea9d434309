"""The one rule that picks the torch device, for training (``run.device``) and serving (``COVIDSCAN_DEVICE``).

- ``auto``: the first CUDA device when PyTorch finds one, else the CPU;
- ``cpu``: the CPU;
- ``cuda``: the first CUDA device; without one, :class:`~covidscan.errors.DeviceUnavailable` naming
  the setting and what PyTorch found (a run or a service asked for a GPU never falls back to the CPU
  silently: training would take hours instead of minutes, a service would miss its latency).

PyTorch is imported when a device is picked, not when this module is imported, so that the serving
code that never touches a model (upload decoding) stays free of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from covidscan.errors import ConfigError, DeviceUnavailable

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(preference: str, setting: str = "run.device") -> torch.device:
    """The device for ``preference`` (``auto``, ``cpu`` or ``cuda``), by the rule above.

    Args:
        preference: the requested device.
        setting: the name of the setting the value came from, for the error message (e.g.
            ``"run.device"``, ``"COVIDSCAN_DEVICE"``).

    Returns:
        ``torch.device("cuda")`` or ``torch.device("cpu")``.

    Raises:
        DeviceUnavailable: ``cuda`` was asked for and PyTorch finds no CUDA device.
        ConfigError: ``preference`` is not one of :data:`DEVICE_CHOICES`.
    """
    import torch

    if preference not in DEVICE_CHOICES:
        raise ConfigError(f"{setting} is {preference!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        raise DeviceUnavailable(f"{setting} is 'cuda' but {cuda_found()}; set {setting} to 'auto' (CPU when there is no GPU) or 'cpu'")
    return torch.device("cpu")


def cuda_found() -> str:
    """What PyTorch found instead of a usable CUDA device, in words."""
    import torch

    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA support"
    return f"PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no usable GPU ({torch.cuda.device_count()} device(s) visible)"
