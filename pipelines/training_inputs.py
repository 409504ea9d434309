"""The training stages' data layout (dvc.yaml's paths) and the library calls bound to it.

Everything that computes lives in :mod:`covidscan.training` (tasks, datasets, the 3D split and training,
the student, the operating threshold, checkpoints) and :mod:`covidscan.tracking.runs` (epoch logging,
loss curves, the data version); the library takes paths as arguments, this module names them.

The tasks of the 2D framework (``xray``: XMDS, ``ct``: CTMDS; classes normal, pneumonia, covid19), their
rows and datasets live in :mod:`covidscan.training.tasks` (shared with the tuning studies) and are
re-exported here. Influenza records (XHDS, CTHDS) are left out of teacher and student training (the
paper's classifier has three classes); experiment C (covid19 vs influenza) therefore needs a model that has
an influenza output: :func:`covidscan.evaluation.experiment.class_scores` refuses a model that lacks one of
an experiment's classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from covidscan.tracking.runs import data_version
from covidscan.training import tasks, volume
from covidscan.training.tasks import (  # noqa: F401 - re-exported for the stage modules
    CLASSES,
    POSITIVE,
    TASKS,
    VOLUME_CLASSES,
    build_classifier,
    build_regressor,
    build_volume_classifier,
    in_channels,
    input_size,
    predict,
    seeded,
    subset_rows,
    task_classes,
    task_rows,
)

PROCESSED = Path("data/processed")  # the data layout of dvc.yaml (stage side: the library takes paths)
SPLITS = Path("data/splits/splits.parquet")
MANIFEST = Path("data/interim/ingest/manifest.parquet")
CLINICAL = Path("data/interim/ingest/clinical.parquet")
TEACHERS_DIR = Path("models/teachers")


def load_tables(processed: Path = PROCESSED, splits: Path = SPLITS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`covidscan.training.tasks.load_tables` on the pipeline's folders."""
    return tasks.load_tables(processed, splits)


def image_dataset(rows: pd.DataFrame, column: str, targets: Sequence[Any], augment: Any = None, **kwargs: Any) -> Any:
    """:func:`covidscan.training.tasks.image_dataset` over the preprocess stage's folder."""
    return tasks.image_dataset(rows, column, targets, augment, root=PROCESSED, **kwargs)


def volume_dataset(rows: pd.DataFrame, augment: Any = None) -> Any:
    """:func:`covidscan.training.volume.volume_dataset` over the preprocess stage's folder."""
    return volume.volume_dataset(rows, augment, root=PROCESSED)


def manifest_digest(path: Path = MANIFEST) -> str:
    """The data version (:func:`covidscan.tracking.runs.data_version`) of the ingest manifest."""
    return data_version(path)
