"""The 2D framework's training tasks: which preprocessed records each task trains on, and their datasets.

Shared by the training stages (``pipelines/``) and the tuning studies (:mod:`covidscan.tuning`).

Tasks (seed 000):

- ``xray``: the mixed X-ray set XMDS (XPDS + XHDS), input ``xray`` (uint8 RGB pseudo-colour, /255);
- ``ct``: the mixed CT set CTMDS (CTPDS + CTHDS), input ``ct_stack`` (uint8 ``ct_slices`` channels,
  /255; CNNCF's 1x1 groups=3 front maps them to 3 channels).

Classes are ``normal, pneumonia, covid19`` (in that order; covid19 is the positive class for the
gate's sensitivity, the validation AUROC and the operating threshold). Influenza records are left out
of teacher and student training (the paper's classifier has three classes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from covidscan.errors import DataError

PROCESSED = Path("data/processed")
SPLITS = Path("data/splits/splits.parquet")

CLASSES: tuple[str, ...] = ("normal", "pneumonia", "covid19")
POSITIVE = CLASSES.index("covid19")
TASKS: dict[str, dict[str, str]] = {
    "xray": {"subset": "XMDS", "input_kind": "xray", "card_kind": "image2d"},
    "ct": {"subset": "CTMDS", "input_kind": "ct_stack", "card_kind": "ct_stack"},
}


def load_tables(processed: Path = PROCESSED, splits: Path = SPLITS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The preprocessed index and the splits table (DataError naming the missing file)."""
    for path in (processed / "index.parquet", splits):
        if not path.is_file():
            raise DataError(f"{path}: not found (run `dvc repro preprocess` first)")
    return pd.read_parquet(processed / "index.parquet"), pd.read_parquet(splits)


def subset_rows(index: pd.DataFrame, splits: pd.DataFrame, subset: str, part: str = "trainval") -> pd.DataFrame:
    """Records of one sub-dataset part joined with their preprocessed paths (sorted by record_id)."""
    s = splits[(splits["subset"] == subset) & (splits["part"] == part)][["record_id", "fold", "binary_label", "group_id"]]
    rows = s.merge(index, on="record_id", how="inner")
    return rows.sort_values("record_id").reset_index(drop=True)


def task_rows(index: pd.DataFrame, splits: pd.DataFrame, task: str, part: str = "trainval") -> pd.DataFrame:
    """The train-val (or test) records of a 2D-framework task, three classes, with ``y`` (class index)."""
    spec = TASKS[task]
    rows = subset_rows(index, splits, spec["subset"], part)
    rows = rows[(rows["input_kind"] == spec["input_kind"]) & rows["label"].isin(CLASSES)].copy()
    rows["y"] = rows["label"].map(CLASSES.index).astype(int)
    return rows.reset_index(drop=True)


def in_channels(task: str, ct_slices: int) -> int:
    """Input channels of a task's network: 3 (pseudo-colour) for X-ray, ``ct_slices`` for a CT stack."""
    return 3 if task == "xray" else int(ct_slices)


def input_size(task: str, pre: Any) -> int:
    """The in-plane input size of a task (``preprocess.xray_size`` or ``preprocess.ct_size``)."""
    return int(pre.xray_size if task == "xray" else pre.ct_size)


def seeded(augment: Callable[..., torch.Tensor]) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Adapt a covidscan.preprocess.augment transform (``aug(x, seed=)``) to NpyDataset's ``augment(x, generator)``."""

    def hook(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(x, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))

    return hook


def image_dataset(
    rows: pd.DataFrame, column: str, targets: Sequence[Any], augment: Any = None, *, add_channel: bool = False, scale: float = 1 / 255,
    root: Path = PROCESSED,
) -> Any:  # fmt: skip
    """An :class:`~covidscan.training.data.NpyDataset` over ``rows[column]`` (paths relative to ``root``)."""
    from covidscan.training.data import NpyDataset

    return NpyDataset(list(zip(rows[column].tolist(), list(targets))), augment=augment, add_channel=add_channel, scale=scale, root=root)


def build_classifier(name: str, models: Any, task: str, pre: Any) -> torch.nn.Module:
    """A three-class 2D-framework network (``student`` or a teacher) for ``task`` at the preprocessed size.

    Raises:
        ModelConfigError: the configuration cannot work at this input size.
    """
    from covidscan.models.zoo import build_model

    return build_model(
        name, models, input_size=input_size(task, pre), num_classes=len(CLASSES), in_channels=in_channels(task, pre.ct_slices),
        class_labels=CLASSES, kind=TASKS[task]["card_kind"],
    )  # fmt: skip


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, batch_size: int = 16) -> np.ndarray:
    """Model outputs (softmax probabilities for classifiers, raw values for regressors) in dataset order."""
    from covidscan.models.card import ModelCard

    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        x = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        y = model(x).float()
        card = getattr(model, "card", None)
        out.append((torch.softmax(y, dim=1) if not isinstance(card, ModelCard) or card.task == "classification" else y).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    """AUROC, NaN when a class is missing."""
    from covidscan.evaluation.curves import auroc_exact

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(auroc_exact(y, np.asarray(score, dtype=float)))
