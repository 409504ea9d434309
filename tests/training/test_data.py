"""Memory-mapped datasets and the epoch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from covidscan.errors import DataError
from covidscan.training.data import EpochSampler, NpyDataset, dataset_targets
from covidscan.training.memory import current_rss_mb, peak_rss_mb
from tests.training.standins import random_flip


def test_samples_are_memory_mapped_not_loaded(tmp_path):
    # 16 files of 4 MiB each = 64 MiB on disk; building the dataset and reading one sample must not
    # bring the whole of it into memory.
    items = []
    for i in range(16):
        path = tmp_path / f"v{i}.npy"
        np.save(path, np.full((1, 1024, 1024), i, dtype=np.float32))
        items.append((path.name, i % 2))
    before = current_rss_mb()
    ds = NpyDataset(items, root=tmp_path, add_channel=False)
    arr = ds.array(3)
    assert isinstance(arr, np.memmap) and arr.shape == (1, 1024, 1024)
    x, y = ds[3]
    assert x.dtype == torch.float32 and float(x[0, 0, 0]) == 3.0 and int(y) == 1
    assert current_rss_mb() - before < 32, "reading one sample loaded far more than one sample"
    assert dataset_targets(ds) == [i % 2 for i in range(16)]
    assert peak_rss_mb() >= current_rss_mb() * 0.5


def test_channel_scale_regression_targets_and_missing_file(tmp_path):
    np.save(tmp_path / "a.npy", np.full((4, 4, 4), 255, dtype=np.uint8))
    ds = NpyDataset([(tmp_path / "a.npy", [0.2, 0.7])], add_channel=True, scale=1 / 255)
    x, y = ds[0]
    assert x.shape == (1, 4, 4, 4) and torch.allclose(x, torch.ones_like(x))
    assert y.dtype == torch.float32 and torch.allclose(y, torch.tensor([0.2, 0.7]))
    with pytest.raises(DataError, match="missing.npy"):
        NpyDataset([(tmp_path / "missing.npy", 0)])[0]


def test_augmentation_is_a_function_of_the_sample_seed(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(16, dtype=np.float32).reshape(1, 4, 4))
    ds = NpyDataset([(tmp_path / "a.npy", 0)], augment=random_flip)
    flips = {bool(torch.equal(ds[(0, s)][0], ds[0][0].flip(-1))) for s in range(20)}
    assert flips == {True, False}  # the hook is applied, with randomness from the seed
    assert all(torch.equal(ds[(0, s)][0], ds[(0, s)][0]) for s in range(5))  # and only from the seed
    assert torch.equal(ds[0][0], torch.arange(16.0).reshape(1, 4, 4))  # plain index: no augmentation


def test_epoch_sampler_order_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    a.set_epoch(4)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b)
    assert sorted(i for i, _ in a) == list(range(10))
    orders = set()
    for epoch in range(3):
        a.set_epoch(epoch)
        orders.add(tuple(i for i, _ in a))
    assert len(orders) == 3
    assert list(EpochSampler(5, seed=0, shuffle=False, with_seeds=False)) == [0, 1, 2, 3, 4]
