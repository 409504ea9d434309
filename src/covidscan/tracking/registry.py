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
from covidscan.tracking.runs import _mlflow, rank_zero_only

log = logging.getLogger(__name__)

WEIGHTS_TAG = "covidscan.weights_artifact"  # run-relative path of the state_dict + config checkpoint
CARD_TAG = "covidscan.model_card"  # artifact URI of the evaluation's model card attached at promotion
PREPROCESS_TAG = "covidscan.preprocess"  # JSON of the preprocessing parameters the model was trained/evaluated with
CONFOUND_TAG = "covidscan.confound"  # the gating test set's confound warning ("none" when there is none)
SERIALIZATION_FORMAT = "pickle"  # explicit; "pt2" (torch.export) refuses the data-dependent gate


def pip_requirements() -> list[str]:
    """The pinned requirements written into every logged model (skips MLflow's slow inference)."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"covidscan=={__version__}"]


@rank_zero_only
def log_model(
    model: Any,
    name: str,
    input_example: np.ndarray,
    *,
    registered_name: str | None = None,
    data_version: str = "",
    checkpoint: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    preprocess: Any = None,
) -> Any:
    """Log a torch model on the active run and optionally register it.

    Args:
        model: the trained torch module (eval mode is set here).
        name: the model's artifact name in the run.
        input_example: a small batch the model accepts (float32).
        registered_name: register under this name (e.g. ``covidscan-student-xray``) when given.
        data_version: the data version (e.g. the manifest digest) tagged on the version.
        checkpoint: ``{"state_dict": ..., "config": ...}`` also stored as ``weights/model.pt`` (with the
            model's card, ``"card"``, added when the model has one: e.g. its gate status).
        tags: extra tags for the model version.
        preprocess: the :class:`~covidscan.config.PreprocessConfig` the model was trained with, recorded as
            the ``covidscan.preprocess`` tag (what serving and ``evaluate-external`` preprocess with).

    Returns:
        The MLflow ``ModelInfo`` (``registered_model_version`` set when registered); None on a torchrun
        rank other than 0, which logs nothing.
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
        card = getattr(model, "card", None)
        if card is not None and hasattr(card, "to_dict") and "card" not in checkpoint:
            checkpoint = {**checkpoint, "card": card.to_dict()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.save(checkpoint, path)
            mlflow.log_artifact(str(path), artifact_path=f"{name}-weights")
    if registered_name and info.registered_model_version is not None:
        client = mlflow.MlflowClient()
        version = str(info.registered_model_version)
        weights = {WEIGHTS_TAG: f"{name}-weights/model.pt"} if checkpoint is not None else {}
        recorded = {PREPROCESS_TAG: preprocess.model_dump_json()} if preprocess is not None else {}
        for key, value in {"data_version": data_version, **weights, **recorded, **(tags or {})}.items():
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


# ------------------------------------------------------------------------------- versions
def recorded_preprocess(tags: dict[str, str], card: dict[str, Any], fallback: Any) -> tuple[Any, str]:
    """The preprocessing a registered version was trained with, and where it came from.

    The version's ``covidscan.preprocess`` tag (recorded at registration, or at promotion for versions
    registered before that) wins. A version without it gets ``fallback`` (the current params.yaml) with
    the input sizes of its model card (:func:`covidscan.preprocess.spec.aligned_preprocess`), logged as a
    warning: the sizes are then the model's, the windowing and colour map the current parameters'.

    Args:
        tags: the version's tags.
        card: the model card (``ModelCard.to_dict()``, as saved in the checkpoint).
        fallback: the current :class:`~covidscan.config.PreprocessConfig`.

    Returns:
        (the preprocessing parameters, a short description of their origin).
    """
    from covidscan.config import PreprocessConfig
    from covidscan.preprocess.spec import aligned_preprocess

    recorded = (tags or {}).get(PREPROCESS_TAG)
    if recorded:
        return PreprocessConfig.model_validate_json(recorded), f"registry version tag {PREPROCESS_TAG}"
    log.warning("the version has no %s tag: current preprocessing parameters with the model card's input sizes", PREPROCESS_TAG)
    return aligned_preprocess(card, fallback), "current params.yaml with the model card's input sizes"


def resolve_version(registered_name: str, ref: str | int) -> Any:
    """The model version a reference names: an alias (``champion``) or a version number.

    Raises:
        DataError: no such registered model, version or alias.
    """
    from mlflow.exceptions import MlflowException

    from covidscan.errors import DataError

    client = _mlflow().MlflowClient()
    try:
        if str(ref).isdigit():
            return client.get_model_version(registered_name, str(ref))
        return client.get_model_version_by_alias(registered_name, str(ref))
    except MlflowException:
        raise DataError(f"MLflow registry: {registered_name!r} has no version or alias {str(ref)!r}") from None


def latest_version(registered_name: str) -> Any | None:
    """The newest version of a registered model, or None when it has none (or does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = _mlflow().MlflowClient().search_model_versions(f"name = '{registered_name}'")
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def export_checkpoint(registered_name: str, ref: str | int, dst: str | Path) -> dict[str, Any]:
    """Write a registered version as a covidscan checkpoint (``zoo.save_model`` format) to ``dst``.

    The version's ``state_dict + config`` artifact is loaded with ``torch.load(weights_only=True)`` and
    the network rebuilt with :func:`covidscan.models.zoo.build_model`; versions logged without it fall
    back to the MLflow PyTorch model. The build config's ``target_range`` (a regressor's training-part
    min/max, :class:`covidscan.models.card.TargetRange`) goes back on the card; other plain data of the
    checkpoint is kept as ``extra``.

    Returns:
        ``{"name", "version", "run_id", "uri", "aliases", "tags"}`` of the resolved version.
    """
    import torch

    from covidscan.config import ModelsConfig
    from covidscan.models.zoo import build_model, restore_card, save_model

    mlflow = _mlflow()
    mv = resolve_version(registered_name, ref)
    extra: dict[str, Any] = {}
    weights = (mv.tags or {}).get(WEIGHTS_TAG)
    if weights and mv.run_id:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=weights, dst_path=tmp)
            payload = torch.load(local, map_location="cpu", weights_only=True)
        b = payload["config"]
        model = build_model(
            b["name"], ModelsConfig.model_validate(b["models"]), input_size=b["input_size"], num_classes=b["num_classes"],
            in_channels=b["in_channels"], class_labels=b["class_labels"], threshold=float(b["threshold"]),
            value_range=tuple(b["value_range"]), kind=b["kind"], target_range=b.get("target_range"),
        )  # fmt: skip
        model.load_state_dict(payload["state_dict"], strict=True)
        if model.card.task == "regression" and model.card.target_range is None and "target_min" in payload and "target_max" in payload:
            from covidscan.models.card import TargetRange

            # versions logged before the range moved onto the card kept the same training-part range as top-level keys
            rng = TargetRange(model.card.class_labels, tuple(payload["target_min"]), tuple(payload["target_max"]))
            model.card.target_range = rng
            model.card.build["target_range"] = rng.to_dict()
            log.info("%s v%s: target range read from the checkpoint's target_min/target_max (logged before it was on the card)", registered_name, mv.version)
        restore_card(model, payload.get("card") or {})
        extra = {k: v for k, v in payload.items() if k not in ("state_dict", "config", "card", "target_min", "target_max")}
    else:
        model = mlflow.pytorch.load_model(f"models:/{registered_name}/{mv.version}", map_location="cpu")
    save_model(model, dst, extra={**extra, "registered_name": registered_name, "registered_version": str(mv.version)})
    return {"name": registered_name, "version": str(mv.version), "run_id": mv.run_id or "", "uri": f"models:/{registered_name}/{mv.version}",
            "aliases": list(getattr(mv, "aliases", []) or []), "tags": dict(mv.tags or {})}  # fmt: skip


# ------------------------------------------------------------------------------ promotion
def record_decision(registered_name: str, version: str | int, tags: dict[str, str], card_path: str | Path | None = None,
                    description: str | None = None) -> None:  # fmt: skip
    """Tag a version with the gate's decision and figures; attach the model card to its run.

    The card is logged as an artifact of the version's source run (``model_card/``) and its URI kept in
    the ``covidscan.model_card`` tag (MLflow versions have no artifacts of their own). ``description``
    (e.g. the decision and a confound warning) becomes the version's description in the registry UI.
    """
    client = _mlflow().MlflowClient()
    mv = client.get_model_version(registered_name, str(version))
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, str(version), key, str(value)[:5000])
    if description is not None:
        client.update_model_version(registered_name, str(version), description=description[:5000])
    if card_path is not None and Path(card_path).is_file() and mv.run_id:
        client.log_artifact(mv.run_id, str(card_path), artifact_path="model_card")
        uri = f"runs:/{mv.run_id}/model_card/{Path(card_path).name}"
        client.set_model_version_tag(registered_name, str(version), CARD_TAG, uri)


def move_champion(registered_name: str, version: str | int, champion: str = "champion", previous: str = "previous-champion") -> str | None:
    """Point ``champion`` at ``version``; the replaced champion (if another version) becomes ``previous``.

    Returns:
        The replaced champion's version, or None.
    """
    client = _mlflow().MlflowClient()
    old = version_by_alias(registered_name, champion)
    if old is not None and str(old.version) != str(version):
        client.set_registered_model_alias(registered_name, previous, str(old.version))
    client.set_registered_model_alias(registered_name, champion, str(version))
    log.info("%s: %s -> version %s (was %s)", registered_name, champion, version, None if old is None else old.version)
    return None if old is None or str(old.version) == str(version) else str(old.version)


def rollback(registered_name: str, champion: str = "champion", previous: str = "previous-champion") -> tuple[str, str]:
    """Swap ``champion`` and ``previous`` (undo the last promotion).

    Returns:
        (the version now champion, the version now previous).

    Raises:
        DataError: there is no ``previous`` version to roll back to.
    """
    from covidscan.errors import DataError

    client = _mlflow().MlflowClient()
    prev = version_by_alias(registered_name, previous)
    cur = version_by_alias(registered_name, champion)
    if prev is None:
        raise DataError(f"MLflow registry: {registered_name!r} has no {previous!r} alias to roll back to")
    client.set_registered_model_alias(registered_name, champion, str(prev.version))
    if cur is not None:
        client.set_registered_model_alias(registered_name, previous, str(cur.version))
        client.set_model_version_tag(registered_name, str(cur.version), "gate.rolled_back", "true")
    return str(prev.version), "" if cur is None else str(cur.version)
