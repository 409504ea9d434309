"""Datasets over preprocessed ``.npy`` files, memory-mapped, and the epoch sampler.

One file per sample; a dataset holds only the list of (path, target), so peak host memory does not
depend on the dataset size: ``__getitem__`` memory-maps its file (``np.load(mmap_mode="r")``) and
copies just that sample into a tensor.

Augmentation hook: any callable ``augment(x: Tensor, generator: torch.Generator) -> Tensor``. Its
randomness must come from the generator it is given; the generator is seeded per (run seed, epoch,
sample position) by :class:`EpochSampler`, so augmentations are identical with any number of
DataLoader workers and after a resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from covidscan.errors import DataError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# The sampler yields (index, augmentation seed); plain integer indices mean "no augmentation seed".
SampleKey = int | tuple[int, int]


class NpyDataset(Dataset):
    """Samples stored one per ``.npy`` file, memory-mapped on access.

    Args:
        items: (path, target) pairs; target is an int class label or a sequence of floats
            (regression targets, e.g. the five normalised clinical indicators).
        augment: optional ``augment(x, generator) -> x`` applied to training samples.
        add_channel: prepend a channel axis (e.g. a CT volume (z, y, x) -> (1, z, y, x)).
        scale: multiply the values by this after conversion to float32 (e.g. 1/255 for uint8).
        root: prefix for relative paths.

    Attributes:
        targets: the targets, in item order (used for class weights without reading any image).
    """

    supports_seeded_keys = True  # __getitem__ accepts (index, augmentation seed) from EpochSampler

    def __init__(
        self,
        items: Sequence[tuple[str | Path, Any]],
        augment: Augment | None = None,
        *,
        add_channel: bool = False,
        scale: float = 1.0,
        root: str | Path | None = None,
    ) -> None:
        root_path = Path(root) if root is not None else None
        self.paths = [str(root_path / p if root_path is not None else p) for p, _ in items]
        self.targets = [t for _, t in items]
        self.augment = augment
        self.add_channel = add_channel
        self.scale = float(scale)

    def __len__(self) -> int:
        return len(self.paths)

    def array(self, index: int) -> np.ndarray:
        """The sample's array as stored, memory-mapped (nothing is read until it is used)."""
        path = self.paths[index]
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: preprocessed array not found (run the preprocess stage)") from None
        except ValueError as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from None

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = (key, None) if isinstance(key, int) else (int(key[0]), int(key[1]))
        x = torch.from_numpy(np.array(self.array(index), dtype=np.float32, copy=True))
        if self.scale != 1.0:
            x.mul_(self.scale)
        if self.add_channel:
            x = x.unsqueeze(0)
        if self.augment is not None and seed is not None:
            x = self.augment(x, torch.Generator().manual_seed(seed))
        target = self.targets[index]
        y = torch.tensor(target, dtype=torch.long) if isinstance(target, (int, np.integer)) else torch.as_tensor(target, dtype=torch.float32)
        return x, y


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit augmentation seed for one sample position of one epoch (a SplitMix64-style mix)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


class EpochSampler(Sampler):
    """Shuffled order that is a pure function of (seed, epoch); yields (index, augmentation seed).

    Because the order depends only on the seed and the epoch number, a run resumed at epoch k visits
    the samples in exactly the order the uninterrupted run did; its state is just ``{seed, epoch}``.
    Call :meth:`set_epoch` before iterating each epoch (the loop does).

    Args:
        n: dataset length.
        seed: the run seed.
        shuffle: False keeps the dataset order (validation).
        with_seeds: yield (index, seed) pairs for augmentation; False yields plain indices.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, with_seeds: bool = True) -> None:
        self.n = n
        self.seed = int(seed)
        self.shuffle = shuffle
        self.with_seeds = with_seeds
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[SampleKey]:
        for position, index in enumerate(self.order()):
            yield (index, sample_seed(self.seed, self.epoch, position)) if self.with_seeds else index

    def __len__(self) -> int:
        return self.n

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


def dataset_targets(dataset: Dataset) -> list[Any]:
    """The training targets without reading images: ``dataset.targets`` (also through a Subset)."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return list(targets)
    inner = getattr(dataset, "dataset", None)
    indices = getattr(dataset, "indices", None)
    if inner is not None and indices is not None:
        base = dataset_targets(inner)
        return [base[i] for i in indices]
    raise DataError(f"{type(dataset).__name__} has no `targets` attribute; class weights need the training labels")
