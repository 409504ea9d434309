"""The MLflow model registry: log a trained model, register it under its task's name, aliases.

Registry stages are deprecated in MLflow 3; covidscan uses aliases (``champion``, ``challenger``) and
tags (data version, promotion decisions). Each model is logged twice over: as an MLflow PyTorch model
(explicit serialization format, pinned pip requirements, an input example and a signature) for MLflow
users, and as ``state_dict + config`` (``weights/model.pt``, loadable with
``torch.load(weights_only=True)``) for covidscan's own loaders.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from covidscan import __version__
from covidscan.tracking.runs import _mlflow

log = logging.getLogger(__name__)

SERIALIZATION_FORMAT = "pickle"  # explicit; "pt2" (torch.export) refuses the data-dependent gate


def pip_requirements() -> list[str]:
    """The pinned requirements written into every logged model (skips MLflow's slow inference)."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"covidscan=={__version__}"]


def log_model(
    model: Any,
    name: str,
    input_example: np.ndarray,
    *,
    registered_name: str | None = None,
    data_version: str = "",
    checkpoint: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """Log a torch model on the active run and optionally register it.

    Args:
        model: the trained torch module (eval mode is set here).
        name: the model's artifact name in the run.
        input_example: a small batch the model accepts (float32).
        registered_name: register under this name (e.g. ``covidscan-student-xray``) when given.
        data_version: the data version (e.g. the manifest digest) tagged on the version.
        checkpoint: ``{"state_dict": ..., "config": ...}`` also stored as ``weights/model.pt``.
        tags: extra tags for the model version.

    Returns:
        The MLflow ``ModelInfo`` (``registered_model_version`` set when registered).
    """
    import torch
    from mlflow.models import infer_signature

    mlflow = _mlflow()
    model.eval()
    with torch.no_grad():
        output = model(torch.as_tensor(input_example)).float().numpy()
    signature = infer_signature(input_example, output)
    info = mlflow.pytorch.log_model(
        model,
        name=name,
        serialization_format=SERIALIZATION_FORMAT,
        input_example=input_example,
        signature=signature,
        pip_requirements=pip_requirements(),
        registered_model_name=registered_name,
        await_registration_for=0,
    )
    if checkpoint is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.save(checkpoint, path)
            mlflow.log_artifact(str(path), artifact_path=f"{name}-weights")
    if registered_name and info.registered_model_version is not None:
        client = mlflow.MlflowClient()
        version = str(info.registered_model_version)
        for key, value in {"data_version": data_version, **(tags or {})}.items():
            client.set_model_version_tag(registered_name, version, key, str(value))
        log.info("registered %s version %s", registered_name, version)
    return info


def set_alias(registered_name: str, alias: str, version: str | int) -> None:
    """Point an alias (e.g. ``champion``) at a model version."""
    _mlflow().MlflowClient().set_registered_model_alias(registered_name, alias, str(version))


def version_by_alias(registered_name: str, alias: str) -> Any | None:
    """The model version an alias points at, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return _mlflow().MlflowClient().get_model_version_by_alias(registered_name, alias)
    except MlflowException:
        return None


def load_model(uri: str) -> Any:
    """Load a registered model, e.g. ``models:/covidscan-student-xray@champion``."""
    return _mlflow().pytorch.load_model(uri)
