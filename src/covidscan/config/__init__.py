"""The one typed configuration: params.yaml parsed into pydantic models.

Defaults are the papers' values (SPEC.md) for real data on a GPU. A *profile* (``profiles.<name>`` in
params.yaml, selected by the top-level ``profile`` key) overrides any subset of keys; the demo profile
scales data size, resolution and epochs down for a 2-core CPU.

Only ``pipelines/`` and the CLI call :func:`load_params`; library code receives typed sub-configs.

DVC sees the profile through the ``configure`` stage: it writes one *effective* file per stage
(``build/params/<stage>.json``) holding exactly the resolved sections that stage reads. A stage
depends on its own file, so changing the profile (or any key) reruns exactly the stages whose
effective parameters changed.

Modules:

* :mod:`~covidscan.config.sections`: the pydantic section models (``run``, ``synth``, ``data``, ... ``tune``).
* :mod:`~covidscan.config.params`: the root :class:`Params`, profiles and merging, :func:`load_params`.
* :mod:`~covidscan.config.stages`: :data:`STAGE_SECTIONS` and the effective per-stage files.
"""

from covidscan.config.params import (
    PARAMS_FILE,
    Params,
    _allowed_for_path,
    _allowed_keys,
    _deep_merge,
    _format_error,
    _model_of,
    flatten,
    load_params,
    parse_params,
)
from covidscan.config.sections import (
    CLASSES,
    ClassName,
    CNNCFConfig,
    CSACNetConfig,
    DataConfig,
    DeidConfig,
    DicomLimits,
    DistillConfig,
    DistributedConfig,
    EvaluateConfig,
    ExperimentSpec,
    Modality,
    ModelsConfig,
    OptimConfig,
    PreprocessConfig,
    RegistryConfig,
    RunConfig,
    Section,
    ServeConfig,
    SourceSpec,
    SplitsConfig,
    SubsetSpec,
    SynthConfig,
    TeacherArch,
    TrainConfig,
    TuneConfig,
    TuneSpace,
    ValidationConfig,
    _default_teacher_archs,
)
from covidscan.config.stages import EFFECTIVE_DIR, STAGE_SECTIONS, effective_sections, write_effective

__all__ = [
    "CLASSES",
    "EFFECTIVE_DIR",
    "PARAMS_FILE",
    "STAGE_SECTIONS",
    "CNNCFConfig",
    "CSACNetConfig",
    "ClassName",
    "DataConfig",
    "DeidConfig",
    "DicomLimits",
    "DistillConfig",
    "DistributedConfig",
    "EvaluateConfig",
    "ExperimentSpec",
    "Modality",
    "ModelsConfig",
    "OptimConfig",
    "Params",
    "PreprocessConfig",
    "RegistryConfig",
    "RunConfig",
    "Section",
    "ServeConfig",
    "SourceSpec",
    "SplitsConfig",
    "SubsetSpec",
    "SynthConfig",
    "TeacherArch",
    "TrainConfig",
    "TuneConfig",
    "TuneSpace",
    "ValidationConfig",
    "effective_sections",
    "flatten",
    "load_params",
    "parse_params",
    "write_effective",
]
