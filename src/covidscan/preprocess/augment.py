"""Training-time augmentation (SPEC.md section 2), seeded, torch tensors in and out (MONAI transforms).

* 2D framework (authors' code): random horizontal flip, on (C, H, W) or a batch (N, C, H, W). The
  dtype is kept (uint8 in, uint8 out), so it can run before :meth:`InputSpec.to_tensor`.
* 3D CSAC-Net (Yao et al. 2021): random isotropic scaling 0.9-1.1 (size kept), horizontal and vertical flips,
  rotation +-15 degrees in the axial (H, W) plane, on (C, D, H, W) or (N, C, D, H, W); float32 out.

"Horizontal" flips the W axis (left-right), "vertical" flips the H axis (anterior-posterior). Each
augmenter owns one random stream: the same seed and the same call sequence give the same outputs.
Pass ``seed=`` to a call to make that one output a pure function of (input, seed), which keeps results
independent of DataLoader worker scheduling (e.g. ``seed = hash((run_seed, epoch, index))``).
Serving never augments.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.transforms import Compose, RandFlip, RandRotate, RandZoom

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError


def _plain(t: torch.Tensor) -> torch.Tensor:
    """MONAI returns MetaTensor; hand back a plain tensor."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


class _Augment:
    """Shared seeding and batch handling; subclasses set ``self.transform`` and ``sample_ndim``."""

    sample_ndim: int = 3
    transform: Compose

    def __init__(self, seed: int = 0) -> None:
        self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        """Restart the random stream from ``seed``."""
        self.transform.set_random_state(state=np.random.RandomState(seed % (2**32)))

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Augment one sample or a batch (each sample drawn independently).

        Args:
            x: a sample (``sample_ndim`` dims, channels first) or a batch (one more leading dim).
            seed: when given, restart the random stream from it first.
        """
        if not isinstance(x, torch.Tensor):
            raise DataError(f"augmentation expects a torch.Tensor, got {type(x).__name__}")
        if seed is not None:
            self.set_seed(seed)
        if x.ndim == self.sample_ndim:
            return self._one(x)
        if x.ndim == self.sample_ndim + 1:
            return torch.stack([self._one(s) for s in x])
        raise DataError(f"{type(self).__name__}: expected {self.sample_ndim} or {self.sample_ndim + 1} dims, got shape {tuple(x.shape)}")


class Augment2D(_Augment):
    """2D framework augmentation: horizontal flip with ``cfg.aug_flip_prob``; dtype and shape kept.

    Args:
        cfg: preprocessing parameters (``aug_flip_prob``).
        seed: seed of the random stream.
    """

    sample_ndim = 3

    def __init__(self, cfg: PreprocessConfig, seed: int = 0) -> None:
        self.transform = Compose([RandFlip(prob=cfg.aug_flip_prob, spatial_axis=1)])  # spatial axis 1 = W
        super().__init__(seed)

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        return _plain(self.transform(x)).to(x.dtype)


class Augment3D(_Augment):
    """3D CSAC-Net augmentation: scaling, horizontal + vertical flips, axial rotation; float32 out.

    Args:
        cfg: preprocessing parameters (``aug_scale_range``, ``aug_scale_prob``, ``aug_flip_prob``,
            ``aug_rotate_deg``, ``aug_rotate_prob``).
        seed: seed of the random stream.
    """

    sample_ndim = 4

    def __init__(self, cfg: PreprocessConfig, seed: int = 0) -> None:
        rad = math.radians(cfg.aug_rotate_deg)
        lo, hi = cfg.aug_scale_range
        self.transform = Compose(
            [
                RandZoom(prob=cfg.aug_scale_prob, min_zoom=lo, max_zoom=hi, keep_size=True, mode="trilinear", padding_mode="edge"),
                RandFlip(prob=cfg.aug_flip_prob, spatial_axis=2),  # horizontal: W
                RandFlip(prob=cfg.aug_flip_prob, spatial_axis=1),  # vertical: H
                # range_x rotates in the plane of the last two spatial axes (H, W): the axial plane
                RandRotate(range_x=(-rad, rad), prob=cfg.aug_rotate_prob, keep_size=True, mode="bilinear", padding_mode="border"),
            ]
        )
        super().__init__(seed)

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        return _plain(self.transform(x.to(torch.float32))).to(torch.float32)
