"""Checkpoints: RNG round trip, the newest loadable file wins."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
import warnings

import numpy as np
import pytest
import torch

from covidscan.config import OptimConfig
from covidscan.training.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from covidscan.training.loop import DeterministicMode
from covidscan.training.schedule import build_scheduler


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = build_scheduler(opt, OptimConfig())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    path = save_checkpoint(tmp_path, 0, model=model, optimizer=opt, scheduler=sched, sampler_state={"seed": 1, "epoch": 0})
    expected = _draws()
    _draws()
    ckpt = load_checkpoint(path)  # weights_only=True
    set_rng_state(ckpt["rng"])
    assert _draws() == expected
    assert ckpt["epoch"] == 0 and ckpt["sampler"] == {"seed": 1, "epoch": 0} and ckpt["scaler"] is None
    assert set(rng_state()) == {"python", "numpy", "torch", "cuda"}


def test_latest_checkpoint_skips_a_damaged_file(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = build_scheduler(opt, OptimConfig())
    save_checkpoint(tmp_path, 0, model=model, optimizer=opt, scheduler=sched)
    save_checkpoint(tmp_path, 1, model=model, optimizer=opt, scheduler=sched)
    (tmp_path / "epoch-0001.pt").write_bytes(b"not a checkpoint")
    path, ckpt = latest_checkpoint(tmp_path)
    assert path.name == "epoch-0000.pt" and ckpt["epoch"] == 0
    assert latest_checkpoint(tmp_path / "absent") is None


def test_deterministic_mode_records_ops_without_deterministic_kernels():
    # On CUDA the loop runs deterministic algorithms in warn-only mode and collects what warned.
    mode = DeterministicMode(True, torch.device("cuda"))
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with mode.watch():
            warnings.warn("max_pool3d_with_indices_backward_cuda does not have a deterministic implementation, but you set ...")
            warnings.warn("something else")
    assert mode.nondeterministic_ops == {"max_pool3d_with_indices_backward_cuda"}
    assert [str(w.message) for w in outer] == ["something else"]  # other warnings pass through


def test_deterministic_mode_is_restored_after_use():
    before = torch.are_deterministic_algorithms_enabled()
    with DeterministicMode(True, torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_deterministic_mode_is_restored_when_training_raises():
    from torch.utils.data import Dataset

    from covidscan.config import RunConfig
    from covidscan.training.loop import train
    from tests.training.standins import TinyCNN

    class Broken(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i):
            raise RuntimeError("unreadable sample")

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # fmt: skip
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    try:
        run = RunConfig(seed=0, deterministic=True, device="cpu", num_workers=0)
        with pytest.raises(RuntimeError, match="unreadable sample"):
            train(TinyCNN(), Broken(), None, optim=OptimConfig(epochs=1, batch_size=2), run=run, class_weights="none", init="none")
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic is False and torch.backends.cudnn.benchmark is True
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def test_checkpoints_are_keyed_by_params_data_and_code(tmp_path):
    """A code change must not resume weights trained by the old code (DVC reruns the stage on a code change;
    resuming its completed checkpoint would re-emit the old model)."""
    import covidscan
    from covidscan.config import RunConfig
    from covidscan.training.checkpoint import checkpoint_dir, code_digest

    pkg = tmp_path / "pkg"
    (pkg / "training").mkdir(parents=True)
    (pkg / "training" / "loop.py").write_text("LR = 0.01\n")
    before = code_digest(pkg)
    assert code_digest(pkg) == before
    (pkg / "training" / "loop.py").write_text("LR = 0.02\n")
    code_digest.cache_clear()
    assert code_digest(pkg) != before
    assert code_digest() == code_digest(Path(covidscan.__file__).resolve().parent)

    data = tmp_path / "splits.parquet"
    data.write_bytes(b"a")
    key = checkpoint_dir(tmp_path, RunConfig(), data)
    assert checkpoint_dir(tmp_path, RunConfig(), data) == key
    assert checkpoint_dir(tmp_path, RunConfig(seed=7), data) != key
    expected = hashlib.sha256(RunConfig().model_dump_json().encode())
    expected.update(code_digest().encode())
    expected.update(hashlib.sha256(b"a").digest())
    assert key == tmp_path / expected.hexdigest()[:12]  # the code is part of the key
    data.write_bytes(b"b")
    assert checkpoint_dir(tmp_path, RunConfig(), data) != key
