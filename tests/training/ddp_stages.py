"""The three data-parallel training stages in one process, for tests/training/test_distributed.py.

Usage (in a tiny project folder): ``python ddp_stages.py [STAGE ...]`` (one process) or
``torchrun --nproc-per-node 2 ddp_stages.py [STAGE ...]`` (2 ranks). Runs ``pipelines.train_teacher`` (TS1,
fold 0), ``pipelines.distill`` and ``pipelines.train_csacnet`` (or the STAGEs named) one after the other
through their ``main(argv)``, as their ``__main__`` would, so one start-up serves them. The ranks wait for each other between
stages (as separate DVC stages would): a stage reads what rank 0 wrote in the one before.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for pipelines

import torch.distributed as dist  # noqa: E402

from pipelines import distill, stage_main, train_csacnet, train_teacher  # noqa: E402

TEACHER = ["--teacher", "TS1", "--fold", "0", "--out", "models/teachers", "--checkpoints", "build/ckpt"]
STAGES = [
    ("train_teacher@TS1", train_teacher.main, TEACHER),
    ("distill", distill.main, ["--teachers", "models/teachers", "--models-dir", "models", "--metrics", "metrics/distill.json"]),
    ("train_csacnet", train_csacnet.main, ["--out", "models/csacnet.pt"]),
]

if __name__ == "__main__":
    chosen = sys.argv[1:] or [name for name, _, _ in STAGES]
    for name, main, argv in STAGES:
        if name not in chosen:
            continue
        stage_main(lambda main=main, argv=argv: main(argv))
        if dist.is_initialized():
            dist.barrier()
