"""The 2D framework's training tasks: which preprocessed records each task trains on, and their datasets.

Shared by the training stages (``pipelines/``) and the tuning studies (:mod:`covidscan.tuning`).

Tasks (seed 000):

- ``xray``: the mixed X-ray set XMDS (XPDS + XHDS), input ``xray`` (uint8 RGB pseudo-colour, /255);
- ``ct``: the mixed CT set CTMDS (CTPDS + CTHDS), input ``ct_stack`` (uint8 ``ct_slices`` channels,
  /255; CNNCF's 1x1 groups=3 front maps them to 3 channels).

Classes per task (``TASKS[task]["classes"]``, in output order; covid19 is index 2 in both, the positive
class for the gate's sensitivity, the validation AUROC and the operating threshold):

- ``xray``: ``normal, pneumonia, covid19`` (the paper's three classes; the few hospital influenza
  X-rays are left out, no X-ray experiment uses them);
- ``ct``: ``normal, pneumonia, covid19, influenza``. Liang et al. 2020 train on the train-val part of each
  sub-dataset, and CTHDS holds influenza: experiment C (covid19 vs influenza) needs a model that has
  seen influenza, so the CT networks learn it as a fourth class rather than scoring influenza with a
  model that never saw it. Experiments renormalise over their own classes
  (:func:`covidscan.evaluation.experiment.class_scores`).
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

CLASSES: tuple[str, ...] = ("normal", "pneumonia", "covid19")  # the X-ray task's (the paper's three)
POSITIVE = CLASSES.index("covid19")
TASKS: dict[str, dict[str, object]] = {
    "xray": {"subset": "XMDS", "input_kind": "xray", "card_kind": "image2d", "classes": CLASSES},
    "ct": {"subset": "CTMDS", "input_kind": "ct_stack", "card_kind": "ct_stack", "classes": (*CLASSES, "influenza")},
}


def task_classes(task: str) -> tuple[str, ...]:
    """The output classes of a task's networks, in order (covid19 is always index :data:`POSITIVE`)."""
    classes = tuple(TASKS[task]["classes"])  # type: ignore[arg-type]
    assert classes.index("covid19") == POSITIVE
    return classes


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
    """The train-val (or test) records of a 2D-framework task (its classes only), with ``y`` (class index)."""
    spec = TASKS[task]
    classes = task_classes(task)
    rows = subset_rows(index, splits, str(spec["subset"]), part)
    rows = rows[(rows["input_kind"] == spec["input_kind"]) & rows["label"].isin(classes)].copy()
    rows["y"] = rows["label"].map(classes.index).astype(int)
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
    """A 2D-framework network (``student`` or a teacher) for ``task`` (its classes) at the preprocessed size.

    Raises:
        ModelConfigError: the configuration cannot work at this input size.
    """
    from covidscan.models.zoo import build_model

    return build_model(
        name, models, input_size=input_size(task, pre), num_classes=len(task_classes(task)), in_channels=in_channels(task, pre.ct_slices),
        class_labels=task_classes(task), kind=str(TASKS[task]["card_kind"]),
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
