"""The tuned parameters file (``params/tuned.yaml``) and how the configuration applies it.

This module does not import Optuna: config resolution (``pipelines/configure.py``) and the training
stages use it.

The file holds, per target (``student-xray``, ``student-ct``), the search values of the best trial
(``values``) and the concrete overrides they mean (``apply``: ``models.cnncf`` fields, ``train.classifier``
lr and weight decay, ``train.distill`` alpha and temperature). A frozen study (budget 0, or no completed
trial) writes ``status: untuned`` with the configured values, so applying it changes nothing.

``tune.use_tuned: true`` -> :func:`resolve_tuned` copies each target's ``apply`` into ``tune.tuned`` (so the
effective parameters of the stages that read ``tune`` change, and DVC reruns exactly those), and the
distill stage trains each task's student with :func:`tuned_params`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from covidscan.config import CNNCFConfig, Params, TuneSpace
from covidscan.errors import ConfigError
from covidscan.models.cnncf import _stretch as stretch_widths

__all__ = ["TARGETS", "apply_values", "configured_values", "read_tuned", "resolve_tuned", "target_task", "tuned_params", "write_tuned"]

TARGETS = ("student-xray", "student-ct", "student-ct-slice")
HEADER = "# Written by the `tune` stage (covidscan.tuning); used when tune.use_tuned is true. Do not edit by hand.\n"


def target_task(target: str) -> str:
    """``student-xray`` -> ``xray`` (the 2D-framework task the target trains on)."""
    if target not in TARGETS:
        raise ConfigError(f"tune.targets: unknown target {target!r}; known: {', '.join(TARGETS)}")
    return target.split("-", 1)[1]


def configured_values(params: Params) -> dict[str, Any]:
    """The search parameters at their configured (untuned) values."""
    c, opt, kd = params.models.cnncf, params.train.classifier, params.train.distill
    return {"Q": c.Q, "L": c.L, "M": c.M, "N": c.N, "width_scale": 1.0, "lr": opt.lr, "weight_decay": opt.weight_decay,
            "kd_alpha": kd.alpha, "kd_temperature": kd.temperature, "ths_sens": c.ths_sens, "ths_count": c.ths_count}  # fmt: skip


def _scale(width: int, factor: float) -> int:
    return max(1, int(math.floor(width * factor + 0.5)))


def apply_values(params: Params, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The concrete overrides a set of search values means, relative to the configured ``params``.

    Widths follow M and N the way the teachers' do (the last width repeats to grow, middle ones drop
    to shrink), then every width is multiplied by ``width_scale``. Missing values keep the configured ones.

    Returns:
        ``{"cnncf": {...}, "classifier": {...}, "distill": {...}}`` (field -> value).
    """
    v = {**configured_values(params), **{k: val for k, val in values.items() if k in TuneSpace.model_fields}}
    c = params.models.cnncf
    s = float(v["width_scale"])
    cnncf = {
        "Q": int(v["Q"]), "L": int(v["L"]), "M": int(v["M"]), "N": int(v["N"]),
        "stem_width": _scale(c.stem_width, s),
        "widths_stage1": [_scale(w, s) for w in stretch_widths(c.widths_stage1, int(v["M"]))],
        "width_stage1_b": _scale(c.width_stage1_b, s),
        "widths_stage2": [_scale(w, s) for w in stretch_widths(c.widths_stage2, int(v["N"]))],
        "width_stage2_b": _scale(c.width_stage2_b, s),
        "ths_sens": float(v["ths_sens"]), "ths_count": int(v["ths_count"]),
    }  # fmt: skip
    return {
        "cnncf": cnncf,
        "classifier": {"lr": float(v["lr"]), "weight_decay": float(v["weight_decay"])},
        "distill": {"alpha": float(v["kd_alpha"]), "temperature": float(v["kd_temperature"])},
    }


def tuned_params(params: Params, target: str, overrides: dict[str, dict[str, Any]] | None = None) -> Params:
    """``params`` with a target's overrides applied (``overrides``, else ``params.tune.tuned[target]``).

    Without overrides for the target (``tune.use_tuned`` false, or a target not tuned) ``params`` is
    returned unchanged.

    Raises:
        ConfigError: overrides that do not validate (naming the target and the key).
    """
    ov = overrides if overrides is not None else params.tune.tuned.get(target)
    if not ov:
        return params
    unknown = sorted(set(ov) - {"cnncf", "classifier", "distill"})
    if unknown:
        raise ConfigError(f"tune.tuned.{target}: unknown sections {unknown}; expected cnncf, classifier, distill")
    try:
        cnncf = CNNCFConfig.model_validate({**params.models.cnncf.model_dump(), **ov.get("cnncf", {})})
        models = params.models.model_copy(update={"cnncf": cnncf})
        classifier = type(params.train.classifier).model_validate({**params.train.classifier.model_dump(), **ov.get("classifier", {})})
        distill = type(params.train.distill).model_validate({**params.train.distill.model_dump(), **ov.get("distill", {})})
    except ValidationError as err:
        raise ConfigError(f"tune.tuned.{target}: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}") from None
    train = params.train.model_copy(update={"classifier": classifier, "distill": distill})
    return params.model_copy(update={"models": models, "train": train})


def read_tuned(path: str | Path) -> dict[str, Any]:
    """The tuned file as a mapping (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of target -> tuned values")
    return data


def write_tuned(path: str | Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Write the tuned file (targets sorted; unchanged content keeps its bytes and DVC hash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = HEADER + yaml.safe_dump({k: entries[k] for k in sorted(entries)}, sort_keys=True, default_flow_style=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def resolve_tuned(params: Params, path: str | Path | None = None) -> Params:
    """Config resolution: with ``tune.use_tuned``, ``tune.tuned`` gets each configured target's ``apply``
    from the tuned file (``tune.output``); without it ``tune.tuned`` is left as configured.

    Raises:
        ConfigError: ``use_tuned`` is true but the file is missing or lacks a configured target.
    """
    if not params.tune.use_tuned:
        return params
    path = Path(path or params.tune.output)
    data = read_tuned(path)
    if not data:
        raise ConfigError(f"tune.use_tuned is true but {path} does not exist (run `dvc repro tune` or `covidscan tune`)")
    tuned = dict(params.tune.tuned)
    for target in params.tune.targets:
        entry = data.get(target)
        if not isinstance(entry, dict) or not isinstance(entry.get("apply"), dict):
            raise ConfigError(f"tune.use_tuned is true but {path} has no tuned values for target {target!r}")
        tuned[target] = entry["apply"]
        tuned_params(params, target, entry["apply"])  # validates now, not in the training stage
    return params.model_copy(update={"tune": params.tune.model_copy(update={"tuned": tuned})})
