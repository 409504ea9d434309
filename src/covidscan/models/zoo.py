"""Build networks by name, describe them, save/load them as state_dict + config, export them.

Names: ``student`` (= ``cnncf``), the teachers in ``models.teacher_archs`` (``TS1`` .. ``TS4``), ``cnnrf``,
``csacnet``, ``resnet3d``. Every built model carries ``class_labels``, ``input_spec``, ``threshold`` and
``model_card()`` (see :mod:`covidscan.models.card`); a regressor built with its ``target_range`` keeps it
on the card, in the build config and in the saved checkpoint.

Saving follows DESIGN.md: a checkpoint is ``{"format", "build", "card", "state_dict"}`` holding only
tensors and plain data, loaded with ``torch.load(weights_only=True)`` and rebuilt with
:func:`build_model`. :func:`export_model` writes a ``torch.export`` program (no Python code needed to
run it; the model card travels inside as ``card.json``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from covidscan.config import ModelsConfig, PreprocessConfig
from covidscan.errors import CovidscanError, DataError, ModelConfigError, NoModelTrained
from covidscan.models.card import InputKind, InputSpec, ModelCard, TargetRange
from covidscan.models.cnncf import CNNCF, teacher_config
from covidscan.models.cnnrf import CLINICAL_INDICATORS, CNNRF
from covidscan.models.csacnet import CSACNet3D, ResNet3D

__all__ = [
    "CHECKPOINT_FORMAT",
    "build_model",
    "export_model",
    "is_empty_model",
    "load_exported",
    "load_model",
    "model_names",
    "restore_card",
    "save_model",
    "summary_row",
    "summary_rows",
    "write_empty_model",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "covidscan.model/1"
_FIXED = ("student", "cnncf", "cnnrf", "csacnet", "resnet3d")


def model_names(cfg: ModelsConfig) -> list[str]:
    """Every name :func:`build_model` accepts with this config."""
    return ["student", "cnncf", *cfg.teacher_archs, "cnnrf", "csacnet", "resnet3d"]


def _family(name: str, cfg: ModelsConfig) -> str:
    if name in ("student", "cnncf"):
        return "cnncf"
    if name in cfg.teacher_archs:
        return "teacher"
    if name in _FIXED:
        return name
    raise ModelConfigError(f"unknown model '{name}'; known: {', '.join(model_names(cfg))}")


def build_model(
    name: str,
    cfg: ModelsConfig,
    *,
    input_size: int | Sequence[int],
    num_classes: int | None = None,
    in_channels: int | None = None,
    class_labels: Sequence[str] | None = None,
    threshold: float = 0.5,
    value_range: tuple[float, float] = (0.0, 1.0),
    kind: InputKind | None = None,
    target_range: TargetRange | Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a network by name from the typed ``models`` config.

    Args:
        name: ``student``/``cnncf``, a teacher (``TS1``..``TS4``), ``cnnrf``, ``csacnet`` or ``resnet3d``.
        cfg: the ``models`` section.
        input_size: spatial size: (rows, cols) or an int for 2D; (slices, rows, cols) for 3D.
        num_classes: classes (default 2); for ``cnnrf`` the regression outputs (default 5).
        in_channels: default 3 for 2D (pseudo-colour), 1 for 3D; ``preprocess.ct_slices`` for a CT stack.
        class_labels: output names (default: class_0.. / the five clinical indicators).
        threshold: operating threshold on the positive-class probability.
        value_range: intensity range the preprocessing produces.
        kind: input kind for the card (default from the architecture and channels).
        target_range: regressors only: the training part's min/max per output (a :class:`TargetRange`
            or its ``to_dict()``); its names must be the output names.

    Returns:
        The model (train mode), with ``card`` filled in.

    Raises:
        ModelConfigError: unknown name, a configuration that cannot work at ``input_size``, or a target
            range on a classifier or naming other outputs.
    """
    family = _family(name, cfg)
    is_3d = family in ("csacnet", "resnet3d")
    if num_classes is None:
        num_classes = len(class_labels) if class_labels else (len(CLINICAL_INDICATORS) if family == "cnnrf" else 2)
    if in_channels is None:
        in_channels = 1 if is_3d else 3
    if class_labels is not None and len(class_labels) != num_classes:
        raise ModelConfigError(f"{name}: {len(class_labels)} class_labels {list(class_labels)} for num_classes={num_classes}")
    if not 0.0 <= threshold <= 1.0:
        raise ModelConfigError(f"{name}: threshold must be in [0, 1], got {threshold}")
    model: nn.Module
    if family in ("cnncf", "teacher"):
        c = cfg.cnncf if family == "cnncf" else teacher_config(name, cfg)
        model = CNNCF.from_config(c, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    elif family == "cnnrf":
        model = CNNRF.from_config(cfg, in_channels=in_channels, input_size=input_size, num_outputs=num_classes)
    elif family == "csacnet":
        model = CSACNet3D.from_config(cfg.csacnet, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    else:
        model = ResNet3D(
            num_classes=num_classes, in_channels=in_channels, input_size=input_size, base_width=cfg.csacnet.base_width, layers=cfg.csacnet.resnet3d_layers
        )
    old: ModelCard = model.card  # type: ignore[assignment]
    size = old.input_spec.size
    labels = tuple(class_labels) if class_labels is not None else old.class_labels
    rng = TargetRange.of(target_range) if target_range is not None else None
    if rng is not None and old.task != "regression":
        raise ModelConfigError(f"{name}: a target range is for regressors, not a {old.task} model")
    if rng is not None and rng.names != tuple(labels):
        raise ModelConfigError(f"{name}: the target range names {list(rng.names)} are not the outputs {list(labels)}")
    build = {
        "name": name,
        "models": cfg.model_dump(mode="json"),
        "input_size": list(size),
        "num_classes": num_classes,
        "in_channels": in_channels,
        "class_labels": list(class_labels) if class_labels is not None else None,
        "threshold": float(threshold),
        "value_range": [float(v) for v in value_range],
        "kind": kind,
        "target_range": rng.to_dict() if rng is not None else None,
    }
    model.card = ModelCard(
        arch=name,
        task=old.task,
        class_labels=labels,
        input_spec=InputSpec(in_channels, tuple(size), (float(value_range[0]), float(value_range[1])), kind or old.input_spec.kind),
        threshold=float(threshold),
        build=build,
        target_range=rng,
    )
    return model


# ------------------------------------------------------------------------------- save / load
def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``state_dict`` + the build config + the card (atomically).

    Args:
        model: a model made by :func:`build_model` (its ``card.build`` says how to rebuild it).
        path: destination file (``.pt``).
        extra: plain JSON-able data to keep alongside (e.g. the training run's metrics).

    Raises:
        ModelConfigError: the model was not made by :func:`build_model`.
    """
    card = getattr(model, "card", None)
    if not isinstance(card, ModelCard) or not card.build:
        raise ModelConfigError("save_model needs a model made by covidscan.models.zoo.build_model (it has no build config)")
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "build": json.loads(json.dumps(card.build)),
        "card": card.to_dict(),
        "extra": json.loads(json.dumps(extra or {})),
        "state_dict": state,
    }
    _atomic_save(payload, path)
    log.debug("saved %s (%d tensors) to %s", card.arch, len(state), path)
    return path


def write_empty_model(path: str | Path) -> Path:
    """The explicit empty output of a stage with nothing to train (0 bytes; DVC still needs its out):
    :func:`load_model` refuses it with :class:`~covidscan.errors.NoModelTrained`, :func:`is_empty_model` tells it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def is_empty_model(path: str | Path) -> bool:
    """True for the 0-byte marker :func:`write_empty_model` writes (no model was trained)."""
    path = Path(path)
    return path.is_file() and path.stat().st_size == 0


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (``torch.load(weights_only=True)``), in eval mode.

    Raises:
        DataError: the file is missing or not a covidscan checkpoint.
        NoModelTrained: the file is the empty marker of a stage that had nothing to train.
        ModelConfigError: its configuration no longer builds.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model checkpoint not found")
    if is_empty_model(path):
        raise NoModelTrained(f"{path}: no model was trained (the stage's sub-dataset had no records; see its metrics)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad file
        raise DataError(f"{path}: not a loadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a covidscan model checkpoint (expected format '{CHECKPOINT_FORMAT}')")
    b = payload["build"]
    model = build_model(
        b["name"],
        ModelsConfig.model_validate(b["models"]),
        input_size=b["input_size"],
        num_classes=b["num_classes"],
        in_channels=b["in_channels"],
        class_labels=b["class_labels"],
        threshold=float(payload["card"].get("threshold", b["threshold"])),
        value_range=tuple(b["value_range"]),  # type: ignore[arg-type]
        kind=b["kind"],
        target_range=payload["card"].get("target_range") or b.get("target_range"),
    )
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise DataError(f"{path}: weights do not match the saved configuration: {err}") from None
    restore_card(model, payload["card"])
    log.debug("loaded %s from %s", b["name"], path)
    return model.to(map_location).eval()


def restore_card(model: nn.Module, saved: dict[str, Any]) -> None:
    """Put back what a saved card records about training (not a build argument): ``gate_opened``."""
    value = saved.get("gate_opened")
    model.card.gate_opened = None if value is None else bool(value)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ export
def _example(model: nn.Module, batch: int = 2) -> torch.Tensor:
    spec: InputSpec = model.input_spec  # type: ignore[assignment]
    p = next(model.parameters())
    return torch.rand((batch, *spec.shape), device=p.device, dtype=p.dtype)


def export_model(model: nn.Module, path: str | Path, example: torch.Tensor | None = None) -> Path:
    """Export the eval-mode model with ``torch.export`` (dynamic batch) to a ``.pt2`` file.

    The model card is stored inside as ``card.json``. Load with :func:`load_exported`.

    Args:
        model: a built model.
        path: destination (``.pt2``).
        example: an example batch (default: random input of the model's input spec, batch 2).
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        x = example if example is not None else _example(model)
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        card = model.model_card() if hasattr(model, "model_card") else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, str(path), extra_files={"card.json": json.dumps(card)})
        log.debug("exported %s to %s", card.get("arch", type(model).__name__), path)
    finally:
        model.train(was_training)
    return path


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a program written by :func:`export_model`: (callable module, model card dict)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: exported model not found")
    extra = {"card.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra["card.json"] or "{}")


# ----------------------------------------------------------------------------------- summary
def _default_inputs(name: str, cfg: ModelsConfig, pre: PreprocessConfig) -> tuple[int, tuple[int, ...]]:
    family = _family(name, cfg)
    if family in ("csacnet", "resnet3d"):
        return 1, (pre.volume_slices, pre.volume_size, pre.volume_size)
    if family == "cnnrf":
        return 3, (pre.crop_size, pre.crop_size)
    return 3, (pre.xray_size, pre.xray_size)


def summary_row(label: str, build: Callable[[], nn.Module]) -> dict[str, Any]:
    """Describe one network: input kind and shape, classes, parameters, forward GFLOPs (batch 1), output shape.

    ``build()`` runs on the ``meta`` device, so even paper-size networks cost no memory or compute;
    FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``. A configuration that is refused gives
    a row with ``error`` set (and the other fields None) instead of raising.
    """
    from torch.utils.flop_counter import FlopCounterMode

    row: dict[str, Any] = {"name": label, "input_kind": None, "input_shape": None, "classes": None, "params": None, "gflops": None,
                           "output_shape": None, "error": None}  # fmt: skip
    try:
        with torch.device("meta"):
            model = build()
        model.eval()
        card: ModelCard = model.card  # type: ignore[assignment]
        row["input_kind"], row["input_shape"], row["classes"] = card.input_spec.kind, tuple(card.input_spec.shape), tuple(card.class_labels)
        row["params"] = sum(p.numel() for p in model.parameters())
        x = torch.empty((1, *card.input_spec.shape), device="meta")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            y = model(x)
        row["gflops"] = counter.get_total_flops() / 1e9
        row["output_shape"] = tuple((y[0] if isinstance(y, tuple) else y).shape)
    except CovidscanError as err:
        row["error"] = str(err)
    return row


def summary_rows(
    cfg: ModelsConfig,
    preprocess: PreprocessConfig | None = None,
    *,
    names: Sequence[str] | None = None,
    num_classes: int = 2,
    include_ct_stack: bool = True,
) -> list[dict[str, Any]]:
    """One :func:`summary_row` per zoo model built with generic inputs (``num_classes`` classes).

    ``covidscan models`` lists the networks as the pipeline builds them instead
    (:func:`covidscan.training.tasks.pipeline_networks`).

    Args:
        cfg: the ``models`` section.
        preprocess: input sizes (``xray_size``, ``crop_size``, ``volume_*``, ``ct_*``); defaults if None.
        names: models to list (default: the student, the configured teachers, cnnrf, csacnet, resnet3d).
        num_classes: classes of the classifiers.
        include_ct_stack: also list the student with the CT front (``ct_slices`` channels at ``ct_size``).
    """
    pre = preprocess or PreprocessConfig()
    wanted: list[tuple[str, str, int, tuple[int, ...]]] = []
    for name in names or ["student", *cfg.teachers, "cnnrf", "csacnet", "resnet3d"]:
        ch, size = _default_inputs(name, cfg, pre)
        wanted.append((name, name, ch, size))
        if include_ct_stack and name == "student" and names is None:
            wanted.append(("student (CT stack)", "student", pre.ct_slices, (pre.ct_size, pre.ct_size)))
    rows = []
    for label, name, ch, size in wanted:
        def build(name: str = name, ch: int = ch, size: tuple[int, ...] = size) -> nn.Module:
            return build_model(name, cfg, input_size=size, in_channels=ch, num_classes=None if name == "cnnrf" else num_classes)

        row = summary_row(label, build)
        row["input_shape"] = row["input_shape"] or (ch, *size)
        rows.append(row)
    return rows
