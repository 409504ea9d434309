"""Datasets the training stages build besides the :class:`~covidscan.training.data.NpyDataset` of
:func:`covidscan.training.tasks.image_dataset`: CNNRF's lesion crops, and a model's input example."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class CropDataset(Dataset):
    """Lesion crops (one ``(n_crops, 3, s, s)`` uint8 file per record) as one sample per crop, /255.

    Args:
        items: (crops file relative to ``root``, crop index, target vector).
        root: folder of the crops files (the preprocess stage's output).
    """

    def __init__(self, items: Sequence[tuple[str, int, Sequence[float]]], root: Path) -> None:
        self.items = [(str(root / p), int(i), list(map(float, t))) for p, i, t in items]
        self.targets = [t for _, _, t in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = key if isinstance(key, int) else int(key[0])
        path, i, target = self.items[index]
        crops = np.load(path, mmap_mode="r", allow_pickle=False)
        return torch.from_numpy(np.array(crops[i], dtype=np.float32)) / 255.0, torch.tensor(target, dtype=torch.float32)


def example_batch(dataset: Any, n: int = 1) -> np.ndarray:
    """A small float32 batch (the first ``n`` samples) for MLflow's input example."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))]).numpy().astype(np.float32)
