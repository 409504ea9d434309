"""The 2D framework's training tasks: which preprocessed records each task trains on, and their datasets;
and the builders of every network the training stages train (:func:`pipeline_networks` lists them).

Shared by the training stages (``pipelines/``), the tuning studies (:mod:`covidscan.tuning`) and
``covidscan models``.

Tasks (Liang et al. 2020):

- ``xray``: the mixed X-ray set XMDS (XPDS + XHDS), input ``xray`` (uint8 RGB pseudo-colour, /255);
- ``ct``: the mixed CT set CTMDS (CTPDS + CTHDS), input ``ct_stack`` (uint8 ``ct_slices`` channels,
  /255; CNNCF's 1x1 groups=3 front maps them to 3 channels);
- ``ct-slice``: CT published as 2D slices (UCSD COVID-CT, the CT figures of the covid-chestxray-dataset,
  ICNP as images), the sub-dataset CTSDS (``kinds: [ct_slice2d]``), input ``ct_slice2d`` (uint8 RGB
  pseudo-colour at ``ct_size``, /255), the X-ray network's 3-channel front. Beyond the papers (which
  train CT on whole series); a task whose sub-dataset selects nothing (the synthetic demo has no 2D
  slices) writes explicit empty outputs and is skipped downstream.

Classes per task (``TASKS[task]["classes"]``, in output order; covid19 is index 2 in both, the positive
class for the gate's sensitivity, the validation AUROC and the operating threshold):

- ``xray`` and ``ct-slice``: ``normal, pneumonia, covid19`` (the paper's three classes; the few hospital
  influenza X-rays are left out, no X-ray experiment uses them);
- ``ct``: ``normal, pneumonia, covid19, influenza``. Liang et al. 2020 train on the train-val part of each
  sub-dataset, and CTHDS holds influenza: experiment C (covid19 vs influenza) needs a model that has
  seen influenza, so the CT networks learn it as a fourth class rather than scoring influenza with a
  model that never saw it. An experiment scores P(covid19) and refuses a model that lacks one of its
  classes (:func:`covidscan.evaluation.experiment.class_scores`).

The 3D networks (CSAC-Net, the 3D ResNet baseline) classify a CT volume as ``non-covid19, covid19``
(:data:`VOLUME_CLASSES`); CNNRF regresses the five clinical indicators from a lesion crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from covidscan.errors import DataError

CLASSES: tuple[str, ...] = ("normal", "pneumonia", "covid19")  # the X-ray task's (the paper's three)
POSITIVE = CLASSES.index("covid19")
TASKS: dict[str, dict[str, object]] = {
    "xray": {"subset": "XMDS", "input_kind": "xray", "card_kind": "image2d", "classes": CLASSES},
    "ct": {"subset": "CTMDS", "input_kind": "ct_stack", "card_kind": "ct_stack", "classes": (*CLASSES, "influenza")},
    "ct-slice": {"subset": "CTSDS", "input_kind": "ct_slice2d", "card_kind": "ct_slice2d", "classes": CLASSES},
}
VOLUME_CLASSES: tuple[str, ...] = ("non-covid19", "covid19")


def task_classes(task: str) -> tuple[str, ...]:
    """The output classes of a task's networks, in order (covid19 is always index :data:`POSITIVE`)."""
    classes = tuple(TASKS[task]["classes"])  # type: ignore[arg-type]
    assert classes.index("covid19") == POSITIVE
    return classes


def load_tables(processed: Path, splits: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    """Input channels of a task's network: ``ct_slices`` for a CT stack, else 3 (pseudo-colour)."""
    return int(ct_slices) if TASKS[task]["input_kind"] == "ct_stack" else 3


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
    root: Path,
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


def build_volume_classifier(name: str, models: Any, pre: Any) -> torch.nn.Module:
    """A 3D network (``csacnet`` or the ``resnet3d`` baseline) for a CT volume, classes :data:`VOLUME_CLASSES`.

    Raises:
        ModelConfigError: the configuration cannot work at this volume size.
    """
    from covidscan.models.zoo import build_model

    size = (pre.volume_slices, pre.volume_size, pre.volume_size)
    return build_model(name, models, input_size=size, num_classes=len(VOLUME_CLASSES), class_labels=VOLUME_CLASSES, kind="ct_volume")


def build_regressor(models: Any, pre: Any, target_range: Any = None) -> torch.nn.Module:
    """CNNRF: the five clinical indicators from a lesion crop of ``preprocess.crop_size``, with the
    training part's ``target_range`` (a :class:`~covidscan.models.card.TargetRange`) when known."""
    from covidscan.models.cnnrf import CLINICAL_INDICATORS
    from covidscan.models.zoo import build_model

    return build_model("cnnrf", models, input_size=pre.crop_size, num_classes=len(CLINICAL_INDICATORS), kind="lesion_crop",
                       class_labels=CLINICAL_INDICATORS, target_range=target_range)  # fmt: skip


@dataclass(frozen=True)
class PipelineNetwork:
    """One network as a training stage builds it: ``build()`` returns it (on the current device)."""

    label: str  # e.g. "student (xray)", "TS1 (ct)", "csacnet"
    arch: str  # the zoo name
    task: str  # "xray" / "ct" (2D framework), "ct_volume" (3D), "lesion_crop" (CNNRF)
    build: Callable[[], torch.nn.Module]


def pipeline_networks(models: Any, pre: Any) -> list[PipelineNetwork]:
    """Every network the pipeline trains, built by the same functions as the stages: the student
    (distill) and the configured teachers (train_teacher) per task of :data:`TASKS`, CNNRF
    (train_regressor), CSAC-Net (train_csacnet) and the 3D ResNet baseline (baselines)."""
    nets = []
    for task in TASKS:
        for name in ("student", *models.teachers):
            nets.append(PipelineNetwork(f"{name} ({task})", name, task, lambda n=name, t=task: build_classifier(n, models, t, pre)))
    nets.append(PipelineNetwork("cnnrf", "cnnrf", "lesion_crop", lambda: build_regressor(models, pre)))
    for name in ("csacnet", "resnet3d"):
        nets.append(PipelineNetwork(name, name, "ct_volume", lambda n=name: build_volume_classifier(n, models, pre)))
    return nets


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
