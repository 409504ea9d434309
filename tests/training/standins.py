"""Tiny stand-ins following the model contract the training loop codes against.

The real CNNCF lives in covidscan.models (written in parallel); these have the same interface:
``forward(x) -> logits``, ``forward_with_aux(x) -> (logits, aux_logits)`` and a Control Gate Block
module with ``is_open`` / ``update(sensitivity) -> bool`` whose state is in buffers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class Gate(nn.Module):
    """Control Gate Block: counts consecutive validation passes with sensitivity >= ths_sens."""

    def __init__(self, ths_sens: float = 0.9, ths_count: int = 3) -> None:
        super().__init__()
        self.ths_sens, self.ths_count = ths_sens, ths_count
        self.register_buffer("open", torch.zeros((), dtype=torch.bool))
        self.register_buffer("counter", torch.zeros((), dtype=torch.long))
        self.updates: list[float] = []  # for the tests: what the loop fed in

    @property
    def is_open(self) -> bool:
        return bool(self.open)

    def update(self, sensitivity: float) -> bool:
        self.updates.append(sensitivity)
        if not self.is_open:
            self.counter.fill_(int(self.counter) + 1 if sensitivity >= self.ths_sens else 0)
            if int(self.counter) >= self.ths_count:
                self.open.fill_(True)
        return self.is_open

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.open.to(x.dtype)


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _bn(dims: int):
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d


class TinyGatedCNN(nn.Module):
    """stem -> stage I -> (aux head, gate) -> stage II x gate -> GAP -> FC."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, ths_sens: float = 0.9, ths_count: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.aux_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
        self.gate = Gate(ths_sens, ths_count)
        self.stage2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8, num_classes))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s1 = self.stage1(x)
        return self.head(self.gate(self.stage2(s1))), self.aux_head(s1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


class TinyCNN(nn.Module):
    """A plain classifier/regressor (2D or 3D): conv, BN, ReLU, max-pool, GAP, FC."""

    def __init__(self, in_channels: int = 1, outputs: int = 2, spatial_dims: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes = outputs
        pool = nn.MaxPool2d(2) if spatial_dims == 2 else nn.MaxPool3d(2)
        gap = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.net = nn.Sequential(
            _conv(spatial_dims)(in_channels, 6, 3, padding=1), _bn(spatial_dims)(6), nn.ReLU(), pool,
            gap, nn.Flatten(), nn.Dropout(dropout), nn.Linear(6, outputs),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConstantLogits(nn.Module):
    """A 'teacher fold' that returns fixed logits for every sample (for fusion tests)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augmentation hook example: horizontal flip with p=0.5, randomness from the given generator."""
    return torch.flip(x, dims=[-1]) if torch.rand((), generator=generator) < 0.5 else x


def write_blobs(folder: Path, n: int, seed: int, size: int = 8, regression: bool = False) -> list[tuple[str, object]]:
    """n single-channel images, one .npy each: class 1 has a bright blob, class 0 only noise.

    Returns (path, target) items; regression targets are [blob intensity, 1 - intensity].
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, object]] = []
    for i in range(n):
        label = i % 2
        img = rng.normal(0.0, 0.3, size=(1, size, size)).astype(np.float32)
        level = float(rng.uniform(0.5, 1.5)) if (label or regression) else 0.0
        c = size // 2
        img[:, c - 2 : c + 2, c - 2 : c + 2] += level
        path = folder / f"s{i:04d}.npy"
        np.save(path, img)
        items.append((str(path), [level, 1.0 - level] if regression else label))
    return items
