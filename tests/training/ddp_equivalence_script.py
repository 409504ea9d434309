"""One training run of a BatchNorm-free gated CNN, for tests/training/test_distributed.py.

Usage: ``torchrun --nproc-per-node 2 ddp_equivalence_script.py WORKDIR`` (or plain ``python`` for one
process). Reads WORKDIR/items.json ({"train": [[path, label], ...], "val": [...]}), trains with
:func:`covidscan.training.loop.train` and, on rank 0, writes WORKDIR/result.pt (the weights and the
history). Without BatchNorm and with unweighted cross-entropy, 2 ranks with half the batch each must
give the one-process weights up to float rounding: the same samples per step, gradients averaged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for tests.training

import torch  # noqa: E402
from torch import nn  # noqa: E402

from covidscan.config import OptimConfig, RunConfig  # noqa: E402
from covidscan.training.data import NpyDataset  # noqa: E402
from covidscan.training.distributed import is_main_process  # noqa: E402
from covidscan.training.loop import train  # noqa: E402
from tests.training.standins import TinyGatedCNN, random_flip  # noqa: E402

OPTIM = OptimConfig(epochs=3, batch_size=8, lr=0.05, warmup_epochs=1, step_size=2, gamma=0.5)
RUN = RunConfig(seed=11, deterministic=True, device="cpu", num_workers=0)


def model_without_batchnorm() -> nn.Module:
    """TinyGatedCNN with its BatchNorm layers replaced by identities (the gate opens after 2 passes)."""
    torch.manual_seed(0)
    model = TinyGatedCNN(ths_sens=0.5, ths_count=2, num_classes=2)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())
    return model


def run(work: Path) -> dict:
    items = json.loads((work / "items.json").read_text())
    result = train(
        model_without_batchnorm(), NpyDataset([tuple(i) for i in items["train"]], augment=random_flip), NpyDataset([tuple(i) for i in items["val"]]),
        optim=OPTIM, run=RUN, class_weights="none",
    )  # fmt: skip
    return {"state_dict": result.state_dict, "history": result.history, "gate_opened_epoch": result.gate_opened_epoch}


if __name__ == "__main__":
    torch.set_num_threads(1)
    work = Path(sys.argv[1])
    out = run(work)
    if is_main_process():
        torch.save(out, work / "result.pt")
