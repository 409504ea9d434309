"""DVC stage entry points: one thin module per stage (parse args -> load params -> call src -> write outs).

Run as ``python -m pipelines.<stage>`` from the project root (dvc.yaml does this).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, ValidationError, model_validator

from covidscan.config import EFFECTIVE_DIR, STAGE_SECTIONS, Params, RunConfig
from covidscan.environment import quiet_telemetry
from covidscan.errors import ConfigError, CovidscanError
from pipelines import layout

_FIELDS = frozenset(Params.model_fields)


class StageParams(Params):
    """One stage's params: only the sections ``STAGE_SECTIONS[stage]`` declares (its effective file).

    Reading any other field (a section, ``profile``, ``profiles``) raises :class:`ConfigError` instead of
    returning a default: a section the stage does not declare is not in ``build/params/<stage>.json``, so
    DVC would not rerun the stage when it changes. Serialising (``model_dump*``) leaves those fields out.
    """

    _stage: str = PrivateAttr("")
    _declared: frozenset[str] | None = PrivateAttr(None)  # None while pydantic validates the instance

    def __getattribute__(self, name: str) -> Any:
        if name in _FIELDS:
            private = object.__getattribute__(self, "__pydantic_private__") or {}
            declared = private.get("_declared")
            if declared is not None and name not in declared:
                stage = private.get("_stage")
                raise ConfigError(
                    f"stage '{stage}' read params section '{name}', which it does not declare; "
                    f"add '{name}' to STAGE_SECTIONS['{stage}'] in covidscan.config (then `dvc repro configure`)"
                )
        return super().__getattribute__(name)

    @model_validator(mode="after")
    def _experiments_name_subsets(self) -> "StageParams":  # overrides Params': only where both are declared
        declared = self.__pydantic_private__ and self.__pydantic_private__.get("_declared")
        if declared is None or {"experiments", "subsets"} <= declared:
            return Params._experiments_name_subsets(self)
        return self

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment the stage's run is filed under (bookkeeping, not an output): ``run.experiment_name``
        where the stage declares ``run``, else RunConfig's default (covidscan.config has ``synth`` without ``run``)."""
        declared = self.__pydantic_private__["_declared"]
        return self.run.experiment_name if declared is None or "run" in declared else RunConfig().experiment_name

    def _undeclared(self) -> set[str]:
        declared = self.__pydantic_private__["_declared"] or _FIELDS
        return set(_FIELDS - declared)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return super().model_dump(**_excluding(kwargs, self._undeclared()))

    def model_dump_json(self, **kwargs: Any) -> str:
        return super().model_dump_json(**_excluding(kwargs, self._undeclared()))


def _excluding(kwargs: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    exclude = kwargs.get("exclude")
    if isinstance(exclude, dict):
        exclude = {**exclude, **dict.fromkeys(fields, True)}
    else:
        exclude = set(exclude or ()) | fields
    return {**kwargs, "exclude": exclude}


def load_stage_params(stage: str, path: str | Path | None = None) -> StageParams:
    """The typed params of ``stage``, from its effective file ``build/params/<stage>.json`` only (written by
    the ``configure`` stage from params.yaml and the profile): the stages never read params.yaml.

    Raises:
        ConfigError: unknown stage, missing/invalid file, or a file whose sections differ from
            ``STAGE_SECTIONS[stage]`` (a stale file: rerun ``configure``).
    """
    if stage not in STAGE_SECTIONS:
        raise ConfigError(f"unknown stage '{stage}'; known stages: {', '.join(sorted(STAGE_SECTIONS))}")
    path = Path(path) if path is not None else EFFECTIVE_DIR / f"{stage}.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run `dvc repro configure`, or `python -m pipelines.configure`)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from None
    declared = frozenset(STAGE_SECTIONS[stage])
    if not isinstance(raw, dict) or set(raw) != declared:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"{path}: holds sections {got}, but STAGE_SECTIONS['{stage}'] = {sorted(declared)} (rerun configure)")
    try:
        params = StageParams.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {err}") from None
    params._stage = stage
    params._declared = declared
    return params


def add_path_options(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    """Declare the shared input path options ``names`` (keys of :data:`pipelines.layout.INPUT_OPTIONS`:
    ``ingest``, ``splits``, ``processed``, ``teachers``) on a stage's parser, with the layout's defaults;
    dvc.yaml passes each one explicitly."""
    for name in names:
        flag, default, text = layout.INPUT_OPTIONS[name]
        parser.add_argument(flag, type=Path, default=default, help=f"{text} (default: {default})")
    return parser


def _mark_repro_failed() -> None:
    """The stage failed: mark this repro's MLflow parent run FAILED (best effort: the stage's own error
    is what the user must see)."""
    try:
        from covidscan.tracking.runs import mark_repro_failed

        mark_repro_failed()
    except Exception as err:  # noqa: BLE001 - never hide the stage's error behind a tracking one
        logging.getLogger("pipelines").warning("could not mark the repro's MLflow parent run FAILED: %s", err)


def stage_main(func: Callable[[], None]) -> None:
    """Run a stage: telemetry off, logging on, user errors as one line on stderr and exit code 2.

    A failing stage (any exception, a non-zero exit) also marks the repro's MLflow parent run FAILED,
    even when it failed before or after its :func:`~covidscan.tracking.runs.stage_run`.
    """
    quiet_telemetry()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import matplotlib  # the backend is chosen here, once, for every stage (figures are PNG files)
    matplotlib.use("Agg")
    try:
        func()
    except CovidscanError as err:
        _mark_repro_failed()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except BaseException as err:
        if not (isinstance(err, SystemExit) and err.code in (0, None)):
            _mark_repro_failed()
        raise
