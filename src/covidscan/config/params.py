"""The root model :class:`Params` (the whole of params.yaml), profiles and their merging, validation
errors that name the key, and the only reader of the file, :func:`load_params`.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from covidscan.config.sections import (
    DataConfig,
    EvaluateConfig,
    ExperimentSpec,
    ModelsConfig,
    PreprocessConfig,
    RegistryConfig,
    RunConfig,
    Section,
    ServeConfig,
    SplitsConfig,
    SubsetSpec,
    SynthConfig,
    TrainConfig,
    TuneConfig,
    ValidationConfig,
)
from covidscan.errors import ConfigError

PARAMS_FILE = Path("params.yaml")


# -------------------------------------------------------------------------------------- root
# `validate` (the stage's section) shadows pydantic's deprecated BaseModel.validate classmethod;
# instances read the field, so the warning is noise.
warnings.filterwarnings("ignore", message='Field name "validate" in "Params" shadows', category=UserWarning)


class Params(Section):
    """The whole of params.yaml, after the active profile has been applied."""

    profile: str = "paper"
    run: RunConfig = Field(default_factory=RunConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    subsets: dict[str, SubsetSpec] = Field(default_factory=dict)
    experiments: dict[str, ExperimentSpec] = Field(default_factory=dict)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    validate: ValidationConfig = Field(default_factory=ValidationConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _experiments_name_subsets(self) -> "Params":
        for name, exp in self.experiments.items():
            unknown = [s for s in exp.subsets if s not in self.subsets]
            if unknown:
                raise ValueError(f"experiments.{name}.subsets names {unknown}, not among subsets {sorted(self.subsets)}")
        return self


# ------------------------------------------------------------------------------------ loading
def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


def _format_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p != "__root__")
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_for_path(Params, [p for p in e["loc"]][:-1])
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"unknown key '{where}'{hint}")
        else:
            lines.append(f"'{where}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def _allowed_for_path(model: type[BaseModel], path: list[Any]) -> list[str]:
    """The field names allowed at a location, following nested models (best effort)."""
    current: Any = model
    for part in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            # dict[str, Model] values: the key is user-chosen, keep the same model for its value
            continue
        current = _model_of(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return _allowed_keys(current)
    return []


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `Model`, `dict[str, Model]` or `list[Model]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def parse_params(raw: dict[str, Any], source: str = "params.yaml", profile: str | None = None) -> Params:
    """Validate a raw params mapping, apply the selected profile, and return the typed config.

    Args:
        raw: the mapping read from params.yaml.
        source: name used in error messages.
        profile: overrides the file's ``profile`` key when given.

    Raises:
        ConfigError: naming the offending key and the allowed ones.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{source}: 'profiles' must be a mapping of profile name -> overrides")
    selected = profile or raw.get("profile", "paper")
    # Validate every profile's overrides on their own first, so a typo in a profile that is not
    # active is still caught, with its full path.
    base = {k: v for k, v in raw.items() if k != "profiles"}
    try:  # the file's own values first, so their errors are not attributed to a profile
        Params.model_validate(base)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_error(err)}") from None
    for name, overrides in profiles.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"{source}: profiles.{name} must be a mapping")
        if "profile" in overrides or "profiles" in overrides:
            raise ConfigError(f"{source}: profiles.{name} may not set 'profile' or 'profiles'")
        try:
            Params.model_validate(_deep_merge(base, overrides))
        except ValidationError as err:
            raise ConfigError(f"{source}: {_format_error(err, prefix=f'profiles.{name}.')}") from None
    if selected != "paper" and selected not in profiles:
        raise ConfigError(f"{source}: profile '{selected}' is not defined; choose one of: paper, {', '.join(sorted(profiles))}")
    merged = _deep_merge(base, profiles.get(selected, {}))
    merged["profile"] = selected
    merged["profiles"] = profiles
    try:
        return Params.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_error(err)}") from None


def load_params(path: str | Path = PARAMS_FILE, profile: str | None = None) -> Params:
    """Read params.yaml into the typed config (the only reader of the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run from the project root, or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, source=str(path), profile=profile)


def flatten(params: Params | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a config into dotted keys (for MLflow params)."""
    data = params.model_dump(mode="json", exclude={"profiles"}) if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return flat
