"""The pydantic section models of params.yaml, one per concern (run, synth, data, splits, preprocess,
validate, models, train, evaluate, registry, serve, tune), and their shared base :class:`Section`.

Field defaults are the paper profile; other profiles override them (:mod:`covidscan.config.params`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["xray", "ct"]
RecordKind = Literal["xray", "ct_volume", "ct_slice2d"]  # the ingest manifest's kinds
ClassName = Literal["normal", "pneumonia", "covid19", "influenza"]
CLASSES: tuple[str, ...] = ("normal", "pneumonia", "covid19", "influenza")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------------------- shared
class DistributedConfig(Section):
    """Data-parallel training with torch.distributed (the teachers, the student, CSAC-Net; see
    :mod:`covidscan.training.distributed`).

    A training stage started by ``torchrun`` (``WORLD_SIZE`` > 1 in its environment) trains data-parallel
    whatever ``nproc_per_node`` says; ``nproc_per_node`` > 1 makes a stage started plainly (``dvc repro``,
    ``python -m pipelines.train_teacher``) relaunch itself under ``torchrun --standalone`` on this node. With
    the defaults and no torchrun nothing changes: one process, as before.

    Attributes:
        nproc_per_node: worker processes on this node (one per GPU; 1: no relaunch).
        max_restarts: times torchrun restarts the workers after one fails (each restart resumes from the
            newest checkpoint).
        backend: ``auto`` = ``nccl`` on CUDA, ``gloo`` on the CPU.
        sync_batchnorm: ``auto`` = SyncBatchNorm on CUDA (batch statistics over all ranks); on the CPU
            PyTorch has no SyncBatchNorm, so BatchNorm normalises each rank's shard of the batch and
            rank 0's running statistics are broadcast before every validation and saved. ``on`` on the
            CPU is an error.
        timeout_s: how long a collective waits for the other ranks.
    """

    nproc_per_node: int = Field(1, ge=1)
    max_restarts: int = Field(3, ge=0)
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    sync_batchnorm: Literal["auto", "on", "off"] = "auto"
    timeout_s: int = Field(1800, ge=10)


class RunConfig(Section):
    """Settings every stage shares."""

    seed: int = 42
    deterministic: bool = True  # CPU runs: seeded and deterministic algorithms
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(2, ge=0)
    experiment_name: str = "covidscan"
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)  # data-parallel training (torchrun)


# ---------------------------------------------------------------------------------------- data
class SynthConfig(Section):
    """The synthetic hybrid DICOM dataset (SPEC.md section 1)."""

    scale: Literal["tiny", "demo", "paper"] = "paper"
    seed: int = 0
    xray_size: int | None = Field(None, ge=16)  # None: the scale's size (tiny 64, demo 128, paper 512)
    ct_size: int | None = Field(None, ge=16)  # None: the scale's in-plane size (tiny 64, demo 96, paper 512)
    clinical_correlation: float = Field(0.85, ge=0, le=1)  # assumed: |r| of each indicator with lesion burden
    rtpcr_negative_fraction: float = Field(0.15, ge=0, le=1)  # assumed: covid19 cases whose first RT-PCR was negative


class SourceSpec(Section):
    """One data source of the hybrid dataset: an adapter reading a location into the manifest.

    ``name`` is the manifest's ``source`` unless the layout carries its own per-row source;
    ``centre``/``origin`` are defaults for rows that do not say. ``options`` are adapter-specific
    (each adapter rejects keys it does not know; docs/DATA.md lists them).
    """

    name: str
    adapter: Literal["hospital", "synthetic", "ccd", "covidct", "rsna", "luna16", "imagefolder", "csv"]
    location: str
    centre: str | None = None
    origin: Literal["public", "hospital"] | None = None  # None: the adapter's default
    max_records: int | None = Field(None, ge=1)  # development: ingest only the first N records
    options: dict[str, Any] = Field(default_factory=dict)


class DicomLimits(Section):
    """Caps checked before any large allocation when reading untrusted DICOM."""

    max_rows: int = Field(4096, ge=1)
    max_columns: int = Field(4096, ge=1)
    max_frames: int = Field(2000, ge=1)
    max_file_mb: float = Field(1024.0, gt=0)
    max_series_slices: int = Field(2000, ge=1)
    max_pixels_mb: float = Field(2048.0, gt=0)  # decoded output (float32 image / int16 volume); assumed
    slice_spacing_tolerance: float = Field(0.05, gt=0, lt=0.5)  # relative, of the median step; assumed
    max_tilt_deg: float = Field(30.0, ge=0, le=45)  # slice normal vs patient z still "axial"; assumed
    padding_hu: float | None = -1024.0  # CT PixelPaddingValue pixels -> this HU (air); None keeps them


class DeidConfig(Section):
    """De-identification at ingest (PS3.15 Basic Profile as the reference)."""

    salt_env: str = "COVIDSCAN_SALT"
    salt_file: str = "~/.config/covidscan/salt"  # outside the repository and outside MLflow
    min_salt_chars: int = Field(16, ge=8)
    quarantine_burned_in: bool = True  # BurnedInAnnotation == YES: not ingested, listed in quarantine


class DataConfig(Section):
    sources: list[SourceSpec] = Field(
        default_factory=lambda: [SourceSpec(name="synthetic", adapter="synthetic", location="data/raw/synthetic")]
    )
    dicom: DicomLimits = Field(default_factory=DicomLimits)
    deid: DeidConfig = Field(default_factory=DeidConfig)
    # the annotation platform's export (`covidscan annotate export`), merged by record_id into
    # annotations.parquet/reads.parquet; keep it under data/raw (ingest's DVC dependency); docs/DATA.md
    annotations: str | None = None


# --------------------------------------------------------------------------- splits/preprocess
class SubsetSpec(Section):
    """A sub-dataset: a selection of modality x sources x classes (Liang et al. 2020, Table 1)."""

    modality: Modality
    sources: list[str] | Literal["public", "hospital", "all"] = "all"
    classes: list[ClassName]
    # the record kinds it takes (default: every kind of the modality); e.g. [ct_slice2d] for CT published as 2D slices
    kinds: list[RecordKind] | None = None


class ExperimentSpec(Section):
    """An evaluation experiment: which test subset, which classes are positive/negative."""

    subsets: list[str]
    positive: list[ClassName]
    negative: list[ClassName] = Field(default_factory=list)
    model: str = "student"
    description: str = ""
    # a folder under the models folder with the baselines stage's models (resnet3d.pt, svm.joblib,
    # random_forest.joblib, features.json), scored side by side on the same test cases (Yao et al.'s table)
    baselines: str = ""


class SplitsConfig(Section):
    """Patient-grouped splits (Liang et al. 2020: TTSF + 5 folds; Yao et al. 2021: centre-held-out)."""

    test_size: float = Field(0.2, gt=0, lt=1)
    n_folds: int = Field(5, ge=2)
    phash_max_distance: int = Field(4, ge=0)
    centre_test: list[str] = Field(default_factory=lambda: ["centre_d"])
    # assumed: near-duplicate image hash; "none" groups by patient and identical arrays only
    hash_method: Literal["phash", "dhash", "none"] = "phash"
    # assumed: a near-duplicate merge never makes a group of more patients than this (one picture
    # republished by a few sources is a small cluster; longer chains are look-alikes, not copies)
    near_duplicate_max_patients: int = Field(4, ge=2)
    # Sub-datasets split by centre (Yao et al. 2021: train on the other centres, test on centre_test)
    # instead of by TTSF; names must be keys of `subsets`.
    centre_subsets: list[str] = Field(default_factory=list)
    # Sub-datasets restricted to records with clinical indicators AND annotations (Liang et al.'s CADS).
    clinical_subsets: list[str] = Field(default_factory=lambda: ["CADS"])
    # Mixed sets: name -> the sub-datasets it unions, part by part (Liang et al.'s XM*, CTM*).
    mixed: dict[str, list[str]] = Field(
        default_factory=lambda: {"XMDS": ["XPDS", "XHDS"], "CTMDS": ["CTPDS", "CTHDS"]}
    )


class PreprocessConfig(Section):
    """Preprocessing shared by training and serving (SPEC.md section 2; covidscan.preprocess)."""

    # 2D path (X-ray, and CT slices published as PNG/JPEG): normalise to 0-255, resize, pseudo-colour
    xray_size: int = Field(512, ge=16)
    colormap: str = "jet"  # any OpenCV colormap name (jet, turbo, bone, ...), or "gray3"; assumed jet
    xray_normalise: Literal["minmax", "percentile"] = "minmax"  # paper: "normalised to 0-255"
    xray_percentiles: tuple[float, float] = (0.5, 99.5)  # assumed; used when xray_normalise="percentile"
    resize_interpolation: Literal["auto", "area", "linear", "cubic"] = "auto"  # assumed; auto: area down, linear up
    # per-image intensity normalisation of the resized grey image, before pseudo-colour (X-rays and 2D CT
    # slices, not lesion crops); not in the papers: "none" is their path, "clahe"/"equalise" a lever against
    # source shortcuts on small real sets (docs/ACCURACY.md)
    intensity: Literal["none", "equalise", "clahe"] = "none"
    clahe_clip_limit: float = Field(2.0, gt=0)  # OpenCV's CLAHE clip limit (used when intensity="clahe")
    clahe_tiles: int = Field(8, ge=1)  # CLAHE tile grid: tiles x tiles
    # CT dimension normalisation (2D framework)
    ct_window_center: float = -600.0
    ct_window_width: float = Field(2000.0, gt=0)
    ct_slices: int = Field(300, ge=3, multiple_of=3)
    ct_size: int = Field(512, ge=16)
    # CT volumes (3D CSAC-Net)
    volume_thickness_mm: float = Field(5.0, gt=0)
    volume_size: int = Field(512, ge=16)
    volume_slices: int = Field(64, ge=4)  # assumed: crop/pad depth after 5 mm resampling
    volume_pad_hu: float = -1000.0  # assumed: air fills slices added by padding
    crop_size: int = Field(64, ge=8)  # CNNRF lesion crops (code)
    # augmentation (training only; Yao et al. 2021 for 3D, the authors' code for 2D)
    aug_flip_prob: float = Field(0.5, ge=0, le=1)  # assumed, per flip axis
    aug_rotate_deg: float = Field(15.0, ge=0, le=180)  # Yao et al. 2021: +-15 degrees
    aug_rotate_prob: float = Field(0.5, ge=0, le=1)  # assumed
    aug_scale_range: tuple[float, float] = (0.9, 1.1)  # Yao et al. 2021: random scaling 0.9-1.1
    aug_scale_prob: float = Field(0.5, ge=0, le=1)  # assumed

    @model_validator(mode="after")
    def _ranges_ordered(self) -> "PreprocessConfig":
        lo, hi = self.xray_percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"preprocess.xray_percentiles must satisfy 0 <= low < high <= 100, got {self.xray_percentiles}")
        lo, hi = self.aug_scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"preprocess.aug_scale_range must satisfy 0 < low <= high, got {self.aug_scale_range}")
        return self


class ValidationConfig(Section):
    """Great Expectations data-quality gates. Thresholds are ours (assumed)."""

    # manifest
    allowed_sources: list[str] | None = None  # None: any name matching source_regex
    source_regex: str = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
    patient_id_regex: str = r"^p-[0-9a-f]{16}$"
    study_id_regex: str = r"^s-[0-9a-f]{16}$"
    forbidden_columns: list[str] = Field(
        default_factory=lambda: [
            "patient_name", "patientname", "name", "patient_birth_date", "birth_date", "birthdate", "dob",
            "patient_sex", "patient_age", "institution", "institution_name", "institution_address",
            "accession", "accession_number", "patientid_raw", "original_patient_id", "other_patient_ids",
            "referring_physician", "performing_physician", "operator", "study_date", "series_date",
            "acquisition_date", "content_date", "study_time", "address", "phone", "telephone",
            "station_name", "device_serial_number", "study_instance_uid", "series_instance_uid",
            "sop_instance_uid",
        ]
    )
    # images (computed from the stored arrays)
    image_min_size: int = Field(16, ge=1)
    image_max_size: int = Field(4096, ge=1)
    ct_hu_min: float = -1100.0  # physical HU range (air ~ -1000, dense bone/metal up to ~3000)
    ct_hu_max: float = 3100.0
    ct_hu_quantile: float = Field(0.001, ge=0, lt=0.5)  # robust min/max: this quantile and 1 - it
    # voxels at or below this are padding outside the reconstruction circle (scanners write -2048 or
    # -3024 there): excluded from the HU range statistics, their share checked on its own
    ct_padding_hu: float = -1500.0
    ct_max_padding_fraction: float = Field(0.6, ge=0, le=1)
    pixel_spacing_mm: tuple[float, float] = (0.05, 10.0)  # row/col spacing, when known
    slice_spacing_mm: tuple[float, float] = (0.3, 20.0)  # CT slice spacing, when known
    # clinical indicators (raw units): name -> (min, max)
    clinical_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "wbc": (0.0, 100.0),  # 10^9/L
            "neutrophil_pct": (0.0, 100.0),
            "lymphocyte_pct": (0.0, 100.0),
            "procalcitonin": (0.0, 200.0),  # ng/mL
            "crp": (0.0, 500.0),  # mg/L
        }
    )
    clinical_max_missing: float = Field(0.0, ge=0, le=1)  # fraction of missing values allowed per indicator
    # annotations: box sides in px at the reference image size (SPEC: 16-64 px on 512x512)
    box_min_px: float = Field(16.0, gt=0)
    box_max_px: float = Field(64.0, gt=0)
    box_reference_size: int = Field(512, ge=1)
    box_tolerance: float = Field(0.25, ge=0)  # relative slack on box_min_px/box_max_px
    # report
    max_examples: int = Field(5, ge=1)  # offending values shown per failed expectation


# -------------------------------------------------------------------------------------- models
class CNNCFConfig(Section):
    """CNNCF hyper-parameters; defaults are the paper's (Q, L, M, N) = (1, 1, 2, 2).

    Widths (assumed, SPEC.md section 3): stage I 64->128->256 (ResBlock-B 256), stage II 256->512->512
    (ResBlock-B 512), so a 512x512 input gives 64x64x256 after stage I and 8x8x512 after stage II.
    ``widths_stage1`` needs M entries and ``widths_stage2`` N entries (the teachers stretch or cut
    them to their own M/N, see ``models.teacher_archs``).
    """

    Q: int = Field(1, ge=1)
    L: int = Field(1, ge=0)
    M: int = Field(2, ge=1)
    N: int = Field(2, ge=1)
    stem_width: int = Field(64, ge=1)
    widths_stage1: list[int] = Field(default_factory=lambda: [128, 256])
    width_stage1_b: int = 256
    widths_stage2: list[int] = Field(default_factory=lambda: [512, 512])
    width_stage2_b: int = 512
    stride_a: int = Field(2, ge=1)  # ResBlock-A stride (paper: 2)
    stride_b: int = Field(2, ge=1)  # ResBlock-B stride (paper: 2; small inputs need 1)
    padding: int = Field(1, ge=0, le=1)  # pooling / first 3x3 conv padding of both blocks (paper: 1)
    bottleneck: bool = False  # bottleneck ResBlock-A (teachers TS3/TS4 set it themselves)
    bottleneck_ratio: int = Field(4, ge=1)  # assumed: bottleneck width = C_out / ratio (ResNet's 4)
    ths_sens: float = Field(0.9, ge=0, le=1)
    ths_count: int = Field(3, ge=1)
    lambda_aux: float = Field(1.0, ge=0)


class TeacherArch(Section):
    """A teacher's depth (code): (M, L, N) and whether its ResBlock-A is the bottleneck variant."""

    M: int = Field(ge=1)
    L: int = Field(ge=0)
    N: int = Field(ge=1)
    bottleneck: bool = False


def _default_teacher_archs() -> dict[str, TeacherArch]:
    return {
        "TS1": TeacherArch(M=2, L=1, N=3),
        "TS2": TeacherArch(M=2, L=2, N=2),
        "TS3": TeacherArch(M=3, L=1, N=2, bottleneck=True),
        "TS4": TeacherArch(M=3, L=2, N=2, bottleneck=True),
    }


class CSACNetConfig(Section):
    """3D CSAC-Net (Yao et al. 2021). The defaults reproduce the paper's layer counts: 39 plain 3D convolutions
    (stem 1 + residual modules 32 + projections 3 + subnet entries 3), 10 atrous convolutions, 3 baseline
    max-pools (stem + before modules 3 and 4), 5 subnet max-pools and 3 FC layers. The arrangement is ours
    (assumed): the paper gives only the counts.
    """

    base_width: int = Field(32, ge=1)
    cross_layers: int = Field(3, ge=1)
    blocks: list[int] = Field(default_factory=lambda: [3, 4, 6, 3])  # basic blocks per module (ResNet-34)
    pooled_modules: list[int] = Field(default_factory=lambda: [2, 3])  # 0-based modules preceded by a max-pool
    stem_kernel: int = Field(3, ge=1)
    stem_stride: list[int] = Field(default_factory=lambda: [1, 2, 2])  # (z, y, x) or [s]: 5 mm slices are thick
    dilations: list[int] = Field(default_factory=lambda: [2, 4])  # one atrous conv each, per subnet max-pool
    subnet_width: int | None = None  # None: base_width
    fc_hidden: list[int] | None = None  # hidden FC widths (len + 1 FC layers); None: (8, 2) x base_width
    resnet3d_layers: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])  # MONAI baseline (ResNet-18)


class ModelsConfig(Section):
    cnncf: CNNCFConfig = Field(default_factory=CNNCFConfig)
    teachers: list[str] = Field(default_factory=lambda: ["TS1", "TS2", "TS3", "TS4"])
    teacher_archs: dict[str, TeacherArch] = Field(default_factory=_default_teacher_archs)  # (code) TS1-TS4
    cnnrf_width: int = Field(512, ge=1)  # CNNRF stage II width; regressor Linear1/2 = width/2, width/4
    csacnet: CSACNetConfig = Field(default_factory=CSACNetConfig)

    @model_validator(mode="after")
    def _teachers_are_defined(self) -> "ModelsConfig":
        unknown = [t for t in self.teachers if t not in self.teacher_archs]
        if unknown:
            raise ValueError(f"models.teachers names {unknown}, not among models.teacher_archs {sorted(self.teacher_archs)}")
        return self


# ------------------------------------------------------------------------------------ training
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


# ---------------------------------------------------------------------------------- evaluation
class EvaluateConfig(Section):
    """Statistics and interpretability (SPEC.md section 5); read by ``covidscan.evaluation``/``explain``."""

    bootstrap: int = Field(1000, ge=10)
    threshold_step: float = Field(0.005, gt=0, le=0.5)
    critical_alpha: float = Field(0.001, gt=0, lt=1)
    ci_level: float = Field(0.95, gt=0, lt=1)  # percentile bootstrap interval
    bootstrap_seed: int = 0  # assumed; the same seed pairs the model's and the readers' resamples
    threshold: float = Field(0.5, ge=0, le=1)  # fixed operating threshold (the papers use 0.5)
    # Operating threshold rule, applied on each model's validation data (never test), stored on its card:
    # "specificity_at_sensitivity" (assumed default: the highest specificity with sensitivity >=
    # min_sensitivity, middle of the tied thresholds) | "youden" | "sensitivity_floor" | "fixed" (the
    # papers' `threshold`); see covidscan.evaluation.curves.choose_threshold
    threshold_rule: Literal["specificity_at_sensitivity", "fixed", "youden", "sensitivity_floor"] = "specificity_at_sensitivity"
    min_sensitivity: float = Field(0.9, gt=0, le=1)  # assumed (= registry.min_sensitivity); the rules' floor
    report_thresholds: list[float] = Field(
        default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7]
    )  # assumed; Yao et al.'s Table 3 lists several thresholds incl. 0.5
    calibration_bins: int = Field(10, ge=2)  # assumed; equal-width bins of the reliability diagram
    mcnemar_exact_below: int = Field(25, ge=0)  # exact binomial when discordant pairs < this
    cam_threshold: float = Field(0.5, gt=0, lt=1)  # assumed; heatmap level kept for DBSCAN
    dbscan_eps: float = Field(1.5, gt=0)  # assumed; pixels (8-connected neighbours are within 1.5)
    dbscan_min_samples: int = Field(4, ge=1)  # assumed
    shortcut_folds: int = Field(5, ge=2)  # assumed; CV folds of the source-shortcut probe
    # assumed: an experiment whose test labels are named by their source or centre for at least this share
    # of the cases (label purity, covidscan.explain.shortcut.confound_check) carries a confound warning
    confound_purity: float = Field(0.95, gt=0, le=1)


# ------------------------------------------------------------------------ registry and serving
class RegistryConfig(Section):
    """The MLflow registry promotion gate (``covidscan.evaluation.promotion``, the ``register`` stage).

    A new version becomes ``challenger``; it replaces ``champion`` when, on the same test set, the lower
    bound of its bootstrap CI of AUROC is at least the champion's point AUROC minus ``auroc_margin`` and,
    at its own operating threshold (its model card), its sensitivity is at least ``min_sensitivity`` and
    its specificity at least ``min_specificity``. The first version of a model becomes champion when it
    meets both floors and the lower bound of its AUROC CI is above ``first_min_auroc`` (chance). A model
    whose Control Gate Block never opened is refused. Regressors (CNNRF): the upper bound of
    the challenger's bootstrap CI of MSE at most the champion's point MSE plus ``mse_margin``.
    """

    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    previous_alias: str = "previous-champion"  # the champion a promotion replaced (for rollback)
    auroc_margin: float = Field(0.02, ge=0, le=1)  # assumed
    min_sensitivity: float = Field(0.9, ge=0, le=1)  # assumed; Yao et al. 2021 report 0.915 on their external centre
    min_specificity: float = Field(0.8, ge=0, le=1)  # assumed; a screening operating point (rules out a model that calls everyone positive)
    # the first version becomes champion only when the lower bound of its AUROC CI is above this (chance)
    first_min_auroc: float = Field(0.5, ge=0, le=1)  # assumed
    mse_margin: float = Field(0.005, ge=0)  # assumed; on the min-max normalised indicators
    bootstrap: int = Field(1000, ge=10)  # resamples of the gate's CIs (SPEC section 5: 1000)
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0  # assumed
    # registered model name -> the experiment whose test set gates it (params.yaml `experiments`)
    gates: dict[str, str] = Field(
        default_factory=lambda: {
            "covidscan-student-xray": "A",
            "covidscan-student-ct": "B",
            "covidscan-student-ct-slice": "CTS",
            "covidscan-csacnet": "S",
            "covidscan-cnnrf": "CA",
        }
    )


class ServeConfig(Section):
    """The BentoML services (``bento/``) and their untrusted-input limits (``covidscan.serving``)."""

    alias: str = "champion"  # which registry alias the bento is built from
    # role -> registered model name; a role whose model is not registered is not served (503); ctslice:
    # the CT-slice student (one CT slice as a PNG/JPEG or a one-slice DICOM), absent from many deployments
    models: dict[Literal["xray", "ct2d", "ct3d", "ctslice", "indicators"], str] = Field(
        default_factory=lambda: {
            "xray": "covidscan-student-xray",
            "ct2d": "covidscan-student-ct",
            "ct3d": "covidscan-csacnet",
            "ctslice": "covidscan-student-ct-slice",
            "indicators": "covidscan-cnnrf",
        }
    )
    max_body_mb: float = Field(256.0, gt=0)  # 413 above this (a paper-size CT series is ~150 MB)
    body_timeout_s: float = Field(30.0, gt=0)  # a client slower than this for the whole body gets 408
    max_concurrency: int = Field(8, ge=1)  # in-flight requests per service before 429
    max_files: int = Field(2000, ge=1)  # files in one CT upload (zip members or multipart parts)
    max_unzipped_mb: float = Field(1024.0, gt=0)  # total declared and actual uncompressed zip size
    max_zip_ratio: float = Field(200.0, gt=1)  # a zip member compressing better than this is refused
    max_image_pixels: int = Field(4096 * 4096, ge=1)  # PNG/JPEG width x height, checked before decoding
    max_npy_mb: float = Field(1024.0, gt=0)  # an uploaded .npy volume
    decode_isolated: bool = True  # decode DICOM/PNG/JPEG in sandboxed worker processes with a memory cap (DecoderPool)
    decode_memory_mb: float = Field(4096.0, gt=0)  # each decoding worker's address-space allowance
    decode_timeout_s: float = Field(60.0, gt=0)  # per decode job (waiting for a free worker included)
    decode_workers: int = Field(2, ge=1)  # pre-started sandboxed decoding workers per front worker
    decode_max_jobs: int = Field(500, ge=1)  # jobs a decoding worker does before it is replaced by a fresh one
    max_crops: int = Field(64, ge=1)  # lesion crops in one CNNRF request
    max_batch_size: int = Field(16, ge=1)  # adaptive batching of X-ray inference
    max_latency_ms: int = Field(2000, ge=1)  # adaptive batching latency budget
    workers: int = Field(1, ge=1)  # HTTP front workers (CPU: decoding and preprocessing)
    mmap_threshold_mb: float = Field(0.0, ge=0)  # service processes: buffers this large go back to the system when freed (0: glibc's dynamic default)
    malloc_arena_max: int = Field(2, ge=0)  # service processes: glibc arenas shared by the request threads (0: glibc default)
    malloc_trim: bool = False  # the front gives free heap pages back to the system after each request


# -------------------------------------------------------------------------------------- tuning
class TuneSpace(Section):
    """The search space of a study: (low, high) ranges (inclusive) and choices. A parameter named in
    ``fixed`` is not searched and keeps its configured value (``models.cnncf`` / ``train``)."""

    Q: tuple[int, int] = (1, 2)
    L: tuple[int, int] = (0, 2)
    M: tuple[int, int] = (1, 3)
    N: tuple[int, int] = (1, 3)
    width_scale: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])  # x every CNNCF width (rounded, >= 1)
    lr: tuple[float, float] = (1e-3, 1e-1)  # log scale
    weight_decay: tuple[float, float] = (1e-6, 1e-3)  # log scale
    kd_alpha: tuple[float, float] = (0.1, 0.9)
    kd_temperature: tuple[float, float] = (1.0, 8.0)
    ths_sens: tuple[float, float] = (0.5, 0.95)
    ths_count: tuple[int, int] = (1, 5)
    fixed: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> "TuneSpace":
        names = ("Q", "L", "M", "N", "lr", "weight_decay", "kd_alpha", "kd_temperature", "ths_sens", "ths_count")
        for name in names:
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"tune.space.{name}: low {lo} > high {hi}")
        unknown = sorted(set(self.fixed) - {*names, "width_scale"})
        if unknown:
            raise ValueError(f"tune.space.fixed names {unknown}; known: {', '.join([*names, 'width_scale'])}")
        if not self.width_scale or min(self.width_scale) <= 0:
            raise ValueError("tune.space.width_scale must be a non-empty list of positive factors")
        return self


class TuneConfig(Section):
    """Optuna studies (covidscan.tuning): one per target, objective = cross-validated validation AUROC
    on the train-val folds only. Defaults are ours (assumed); the papers do not tune."""

    n_trials: int = Field(50, ge=0)  # budget: finished trials per study (0 = frozen: write the configured values)
    timeout_minutes: float | None = Field(None, gt=0)  # stop starting trials after this (per `tune` call)
    use_tuned: bool = False  # distill builds and trains the student with params/tuned.yaml
    targets: list[Literal["student-xray", "student-ct"]] = Field(default_factory=lambda: ["student-xray", "student-ct"])
    study_name: str = "covidscan"  # the study of a target is "<study_name>-<target>"
    storage: str | None = None  # None: $OPTUNA_STORAGE, else build/optuna/journal.log; or a postgresql:// URL
    folds: int | None = Field(2, ge=1)  # CV folds per trial (the first k train-val folds); None: all
    epochs: int | None = Field(None, ge=1)  # epochs per fold in a trial; None: train.classifier.epochs
    max_batches_per_epoch: int | None = Field(None, ge=1)  # None: train.classifier's
    distill: bool = True  # KD in the objective (teachers of the validation fold) when teacher models exist
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_startup_trials: int = Field(3, ge=0)  # median: trials before pruning starts
    pruner_warmup_steps: int = Field(1, ge=0)  # median: reports (epochs) before a trial can be pruned
    sampler_seed: int | None = None  # TPE seed; None: run.seed (worker i adds i)
    sampler_startup_trials: int = Field(5, ge=1)  # TPE: random trials first
    heartbeat_seconds: int = Field(60, ge=1)  # a RUNNING trial without a heartbeat for grace_seconds is failed
    grace_seconds: int = Field(120, ge=1)
    max_retry: int = Field(1, ge=0)  # a trial failed by a dead worker is retried this often with its params
    poll_seconds: float = Field(2.0, gt=0)  # a worker with nothing to claim waits this long for others' trials
    output: str = "params/tuned.yaml"
    # Filled by config resolution (covidscan.tuning.tuned.resolve_tuned) from `output` when use_tuned:
    # target -> tuned values. May also be set by hand.
    tuned: dict[str, dict[str, Any]] = Field(default_factory=dict)
    space: TuneSpace = Field(default_factory=TuneSpace)
