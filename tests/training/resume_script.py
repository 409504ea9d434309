"""A training run in its own process, for the SIGKILL resume test (tests/training/test_resume.py).

Usage: python resume_script.py WORKDIR [SLEEP_SECONDS]
Trains a tiny gated CNN deterministically on the CPU with a checkpoint after every epoch in
WORKDIR/ckpt, then writes WORKDIR/final.pt (the state_dict) and WORKDIR/result.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for tests.training

import torch  # noqa: E402

from covidscan.config import OptimConfig, RunConfig  # noqa: E402
from covidscan.training.data import NpyDataset  # noqa: E402
from covidscan.training.loop import train  # noqa: E402
from tests.training.standins import TinyGatedCNN, random_flip, write_blobs  # noqa: E402

EPOCHS = 6


def run_training(work: Path, pause: float = 0.0) -> None:
    """Train (resuming from WORK/ckpt when a checkpoint is there) and write WORK/final.pt, WORK/result.json."""
    train_items = write_blobs(work / "data" / "train", 32, seed=1)
    val_items = write_blobs(work / "data" / "val", 16, seed=2)
    # dropout draws from the global torch RNG, so a resume must restore that state exactly
    model = TinyGatedCNN(ths_sens=0.6, ths_count=1, num_classes=2, dropout=0.2)
    optim = OptimConfig(epochs=EPOCHS, batch_size=8, lr=0.05, warmup_epochs=1, step_size=3, gamma=0.5)
    run = RunConfig(seed=7, deterministic=True, device="cpu", num_workers=0)
    result = train(
        model, NpyDataset(train_items, augment=random_flip), NpyDataset(val_items), optim=optim, run=run,
        checkpoint_dir=work / "ckpt", callback=lambda metrics: time.sleep(pause),
    )  # fmt: skip
    torch.save(result.state_dict, work / "final.pt")
    (work / "result.json").write_text(json.dumps({"resumed_from": result.resumed_from, "history": result.history}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_training(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
