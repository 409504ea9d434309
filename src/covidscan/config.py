"""The one typed configuration: params.yaml parsed into pydantic models.

Defaults are the papers' values (SPEC.md) for real data on a GPU. A *profile* (``profiles.<name>`` in
params.yaml, selected by the top-level ``profile`` key) overrides any subset of keys; the demo profile
scales data size, resolution and epochs down for a 2-core CPU.

Only ``pipelines/`` and the CLI call :func:`load_params`; library code receives typed sub-configs.

DVC sees the profile through the ``configure`` stage: it writes one *effective* file per stage
(``build/params/<stage>.json``) holding exactly the resolved sections that stage reads. A stage
depends on its own file, so changing the profile (or any key) reruns exactly the stages whose
effective parameters changed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from covidscan.errors import ConfigError

PARAMS_FILE = Path("params.yaml")
EFFECTIVE_DIR = Path("build/params")

Modality = Literal["xray", "ct"]
ClassName = Literal["normal", "pneumonia", "covid19", "influenza"]
CLASSES: tuple[str, ...] = ("normal", "pneumonia", "covid19", "influenza")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------------------- shared
class RunConfig(Section):
    """Settings every stage shares."""

    seed: int = 42
    deterministic: bool = True  # CPU runs: seeded and deterministic algorithms
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(2, ge=0)
    experiment_name: str = "covidscan"


# ------------------------------------------------------------------------------ data (issue 3)
class SynthConfig(Section):
    """The synthetic hybrid DICOM dataset (SPEC.md section 1)."""

    scale: Literal["tiny", "demo", "paper"] = "paper"
    seed: int = 0


class SourceSpec(Section):
    """One data source of the hybrid dataset: an adapter reading a location into the manifest."""

    name: str
    adapter: str
    location: str
    centre: str | None = None


class DicomLimits(Section):
    """Caps checked before any large allocation when reading untrusted DICOM."""

    max_rows: int = Field(4096, ge=1)
    max_columns: int = Field(4096, ge=1)
    max_frames: int = Field(2000, ge=1)
    max_file_mb: float = Field(1024.0, gt=0)
    max_series_slices: int = Field(2000, ge=1)


class DeidConfig(Section):
    """De-identification at ingest (PS3.15 Basic Profile as the reference)."""

    salt_env: str = "COVIDSCAN_SALT"
    salt_file: str = "~/.config/covidscan/salt"


class DataConfig(Section):
    sources: list[SourceSpec] = Field(
        default_factory=lambda: [SourceSpec(name="synthetic", adapter="synthetic", location="data/raw/synthetic")]
    )
    dicom: DicomLimits = Field(default_factory=DicomLimits)
    deid: DeidConfig = Field(default_factory=DeidConfig)


# ----------------------------------------------------------------- splits/preprocess (issue 4)
class SubsetSpec(Section):
    """A sub-dataset: a selection of modality x sources x classes (seed 000 Table 1)."""

    modality: Modality
    sources: list[str] | Literal["public", "hospital", "all"] = "all"
    classes: list[ClassName]


class ExperimentSpec(Section):
    """An evaluation experiment: which test subset, which classes are positive/negative."""

    subsets: list[str]
    positive: list[ClassName]
    negative: list[ClassName] = Field(default_factory=list)
    model: str = "student"
    description: str = ""


class SplitsConfig(Section):
    test_size: float = Field(0.2, gt=0, lt=1)
    n_folds: int = Field(5, ge=2)
    phash_max_distance: int = Field(4, ge=0)
    centre_test: list[str] = Field(default_factory=lambda: ["centre_d"])


class PreprocessConfig(Section):
    xray_size: int = Field(512, ge=16)
    colormap: str = "jet"  # any OpenCV colormap name, or "gray3"
    ct_window_center: float = -600.0
    ct_window_width: float = Field(2000.0, gt=0)
    ct_slices: int = Field(300, ge=3, multiple_of=3)
    ct_size: int = Field(512, ge=16)
    volume_thickness_mm: float = Field(5.0, gt=0)
    volume_size: int = Field(512, ge=16)
    volume_slices: int = Field(64, ge=4)
    crop_size: int = Field(64, ge=8)  # CNNRF lesion crops (code)


# --------------------------------------------------------------------------- models (issue 5)
class CNNCFConfig(Section):
    """CNNCF hyper-parameters; defaults are the paper's (Q, L, M, N) = (1, 1, 2, 2)."""

    Q: int = Field(1, ge=1)
    L: int = Field(1, ge=0)
    M: int = Field(2, ge=1)
    N: int = Field(2, ge=1)
    stem_width: int = Field(64, ge=1)
    widths_stage1: list[int] = Field(default_factory=lambda: [128, 256])
    width_stage1_b: int = 256
    widths_stage2: list[int] = Field(default_factory=lambda: [512, 512])
    width_stage2_b: int = 512
    stride_b: int = Field(2, ge=1)
    ths_sens: float = Field(0.9, ge=0, le=1)
    ths_count: int = Field(3, ge=1)
    lambda_aux: float = Field(1.0, ge=0)


class CSACNetConfig(Section):
    base_width: int = Field(32, ge=1)
    cross_layers: int = Field(3, ge=1)


class ModelsConfig(Section):
    cnncf: CNNCFConfig = Field(default_factory=CNNCFConfig)
    teachers: list[str] = Field(default_factory=lambda: ["TS1", "TS2", "TS3", "TS4"])
    cnnrf_width: int = Field(512, ge=1)
    csacnet: CSACNetConfig = Field(default_factory=CSACNetConfig)


# ------------------------------------------------------------------------- training (issue 6)
class OptimConfig(Section):
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(2, ge=0)
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0)
    max_batches_per_epoch: int | None = None  # None: the whole epoch


class DistillConfig(Section):
    alpha: float = Field(0.5, ge=0, le=1)
    temperature: float = Field(4.0, gt=0)
    fusion: Literal["mean", "auroc_weighted"] = "mean"
    teacher_mode: Literal["mean_folds", "best_fold"] = "mean_folds"


class TrainConfig(Section):
    classifier: OptimConfig = Field(default_factory=OptimConfig)
    regressor: OptimConfig = Field(default_factory=lambda: OptimConfig(epochs=200, step_size=50))
    csacnet: OptimConfig = Field(
        default_factory=lambda: OptimConfig(epochs=75, batch_size=10, optimizer="adam", lr=1e-3, warmup_epochs=0, step_size=1000, gamma=1.0, weight_decay=0.0)
    )
    distill: DistillConfig = Field(default_factory=DistillConfig)
    class_weights: Literal["inverse_frequency", "none"] = "inverse_frequency"
    keep: Literal["last", "best"] = "last"  # the paper keeps the last epoch's weights


# ----------------------------------------------------------------------- evaluation (issue 7)
class EvaluateConfig(Section):
    """Statistics and interpretability (SPEC.md section 5); read by ``covidscan.evaluation``/``explain``."""

    bootstrap: int = Field(1000, ge=10)
    threshold_step: float = Field(0.005, gt=0, le=0.5)
    critical_alpha: float = Field(0.001, gt=0, lt=1)
    ci_level: float = Field(0.95, gt=0, lt=1)  # percentile bootstrap interval
    bootstrap_seed: int = 0  # assumed; the same seed pairs the model's and the readers' resamples
    threshold: float = Field(0.5, ge=0, le=1)  # fixed operating threshold (the papers use 0.5)
    # Operating threshold rule on validation data: "fixed" (the paper) | "youden" | "sensitivity_floor"
    threshold_rule: Literal["fixed", "youden", "sensitivity_floor"] = "fixed"
    min_sensitivity: float = Field(0.95, gt=0, le=1)  # assumed; for threshold_rule="sensitivity_floor"
    report_thresholds: list[float] = Field(
        default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7]
    )  # assumed; seed 004 Table 3 lists several thresholds incl. 0.5
    calibration_bins: int = Field(10, ge=2)  # assumed; equal-width bins of the reliability diagram
    mcnemar_exact_below: int = Field(25, ge=0)  # exact binomial when discordant pairs < this
    cam_threshold: float = Field(0.5, gt=0, lt=1)  # assumed; heatmap level kept for DBSCAN
    dbscan_eps: float = Field(1.5, gt=0)  # assumed; pixels (8-connected neighbours are within 1.5)
    dbscan_min_samples: int = Field(4, ge=1)  # assumed
    shortcut_folds: int = Field(5, ge=2)  # assumed; CV folds of the source-shortcut probe


# --------------------------------------------------------------------------- tuning (issue 8)
class TuneConfig(Section):
    n_trials: int = Field(50, ge=0)
    timeout_minutes: float | None = None
    use_tuned: bool = False


# -------------------------------------------------------------------------------------- root
class Params(Section):
    """The whole of params.yaml, after the active profile has been applied."""

    profile: str = "paper"
    run: RunConfig = Field(default_factory=RunConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    subsets: dict[str, SubsetSpec] = Field(default_factory=dict)
    experiments: dict[str, ExperimentSpec] = Field(default_factory=dict)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _experiments_name_subsets(self) -> "Params":
        for name, exp in self.experiments.items():
            unknown = [s for s in exp.subsets if s not in self.subsets]
            if unknown:
                raise ValueError(f"experiments.{name}.subsets names {unknown}, not among subsets {sorted(self.subsets)}")
        return self


# Which top-level sections each DVC stage reads. The `configure` stage writes exactly these, resolved,
# to build/params/<stage>.json, so DVC reruns a stage only when one of them changes.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "synth": ("synth",),
    "ingest": ("run", "data"),
}


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


def effective_sections(params: Params, stage: str) -> dict[str, Any]:
    """The resolved sections a stage reads, as plain JSON-able data."""
    if stage not in STAGE_SECTIONS:
        raise ConfigError(f"unknown stage '{stage}'; known stages: {', '.join(sorted(STAGE_SECTIONS))}")
    dumped = params.model_dump(mode="json")
    return {section: dumped[section] for section in STAGE_SECTIONS[stage]}


def write_effective(params: Params, out_dir: str | Path = EFFECTIVE_DIR) -> list[Path]:
    """Write build/params/<stage>.json for every stage; unchanged content keeps its bytes (and DVC hash)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in sorted(STAGE_SECTIONS):
        path = out_dir / f"{stage}.json"
        text = json.dumps(effective_sections(params, stage), indent=2, sort_keys=True) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


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
