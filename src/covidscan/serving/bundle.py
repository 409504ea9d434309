"""A served model on disk: ``model.pt`` (``zoo.save_model`` format) + ``serving.json`` (what it is).

``serving.json`` records the role (``xray``, ``ct2d``, ``ct3d``, ``ctslice``, ``indicators``), the registered name,
the resolved version and the alias it was resolved from, the model card (labels, input spec,
threshold) and the preprocessing parameters, so the HTTP front can decode and preprocess without
loading any weights, and every response can name the model version it came from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from covidscan.preprocess.spec import aligned_preprocess  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

ROLES = ("xray", "ct2d", "ct3d", "ctslice", "indicators")
# role -> the model card input kinds it may serve (ctslice: the CT-slice student, one CT slice as a 2D image)
ROLE_KINDS = {"xray": ("image2d",), "ct2d": ("ct_stack",), "ct3d": ("ct_volume",), "ctslice": ("ct_slice2d",), "indicators": ("lesion_crop",)}
MODEL_FILE = "model.pt"
INFO_FILE = "serving.json"


@dataclass(frozen=True)
class BundleInfo:
    """What ``serving.json`` holds.

    Attributes:
        role: the endpoint family the model serves.
        name: registered model name.
        version: the resolved registry version.
        alias: the alias it was resolved from (or "" for a file).
        card: the model card (``ModelCard.to_dict()``).
        preprocess: the preprocessing parameters, sizes aligned with the card's input spec.
        extra: plain data kept with the checkpoint (e.g. CNNRF's indicator names); a regressor's target
            range is on its card (``card["target_range"]``).
    """

    role: str
    name: str
    version: str
    alias: str
    card: dict[str, Any]
    preprocess: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.card["class_labels"])

    @property
    def threshold(self) -> float:
        return float(self.card.get("threshold", 0.5))

    @property
    def kind(self) -> str:
        return str(self.card["input_spec"]["kind"])

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.model_validate(self.preprocess)

    def describe(self) -> dict[str, Any]:
        """Name, version, alias and architecture: what responses carry (nothing else)."""
        return {"name": self.name, "version": self.version, "alias": self.alias, "arch": self.card.get("arch", "")}


def write_bundle(model_path: str | Path, dst: str | Path, *, role: str, name: str, version: str, alias: str, preprocess: PreprocessConfig) -> BundleInfo:
    """Copy a checkpoint into ``dst`` and write its ``serving.json``.

    Raises:
        DataError: unknown role, or a model whose input kind does not fit the role.
        MissingTargetRange: an ``indicators`` (regression) model without its card's target range.
    """
    import shutil

    import torch

    if role not in ROLES:
        raise DataError(f"unknown serving role {role!r}; expected one of {', '.join(ROLES)}")
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    card = payload["card"]
    if card["input_spec"]["kind"] not in ROLE_KINDS[role]:
        raise DataError(f"{name} v{version}: input kind {card['input_spec']['kind']!r} cannot serve role {role!r} (expects {ROLE_KINDS[role]})")
    if card.get("task") == "regression":
        from covidscan.models.card import target_range_of

        target_range_of(card, f"{name} v{version} ({model_path})")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, dst / MODEL_FILE)
    extra = {k: v for k, v in (payload.get("extra") or {}).items() if k in ("indicators",)}
    info = BundleInfo(role, name, str(version), alias, card, aligned_preprocess(card, preprocess).model_dump(mode="json"), extra)
    (dst / INFO_FILE).write_text(json.dumps(info.__dict__, indent=2, sort_keys=True) + "\n")
    return info


def read_bundle(folder: str | Path) -> BundleInfo:
    """Read ``serving.json`` of a bundle folder."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found (not a covidscan serving bundle)")
    return BundleInfo(**json.loads(path.read_text()))


def bundle_from_registry(registered_name: str, alias: str, role: str, dst: str | Path, preprocess: PreprocessConfig) -> BundleInfo:
    """Resolve ``models:/<name>@<alias>`` in the MLflow registry and write it as a bundle.

    The preprocessing parameters recorded on the version (``covidscan.preprocess`` tag, written at
    registration and kept at promotion) win over ``preprocess`` (the current params.yaml); see
    :func:`covidscan.tracking.registry.recorded_preprocess`.
    """
    import tempfile

    import torch

    from covidscan.tracking.registry import export_checkpoint, recorded_preprocess

    with tempfile.TemporaryDirectory(prefix="covidscan-bundle-") as tmp:
        info = export_checkpoint(registered_name, alias, Path(tmp) / MODEL_FILE)
        card = torch.load(Path(tmp) / MODEL_FILE, map_location="cpu", weights_only=True)["card"]
        pre, _ = recorded_preprocess(info["tags"], card, preprocess)
        return write_bundle(Path(tmp) / MODEL_FILE, dst, role=role, name=registered_name, version=info["version"], alias=alias, preprocess=pre)
