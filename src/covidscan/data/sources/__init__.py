"""Source adapters: each turns one on-disk layout into :class:`Record` objects for ingest.

An adapter is constructed from its :class:`~covidscan.config.SourceSpec` and the DICOM limits, and
:meth:`SourceAdapter.records` lists the records (cheap: no pixel data is read). Each record carries a
``load`` callable that reads its array, and for DICOM a ``header`` callable that reads the header only
(ingest checks BurnedInAnnotation and takes PatientID/StudyInstanceUID from it before any pixels are
read). Keys (``key``, ``patient_key``, ``study_key``) may be identifying: ingest only ever stores or
logs their salted pseudonyms.

Rows an adapter cannot turn into a record because the data is bad (the file is missing, the label
text is unknown) are not dropped silently: the adapter calls :meth:`SourceAdapter.reject`, and ingest
writes each one to ``quarantine.parquet`` with its reason (pseudonyms and the table's row number
only). ``skipped`` counts the records a documented filter leaves out (views, modalities, splits,
duplicates); ``defaulted`` counts labels that came from a documented default rather than the row's
own text (e.g. the csv adapter's ``non_covid_label``).

Registry: :func:`get_adapter` maps ``SourceSpec.adapter`` to a class; :data:`ADAPTERS` lists them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydicom.dataset import Dataset

from covidscan.config import DicomLimits, SourceSpec
from covidscan.errors import ConfigError, DataError


@dataclass(frozen=True)
class Loaded:
    """What a record's loader returns.

    Args:
        array: ``xray``/``ct_slice2d`` float32 (rows, cols); ``ct_volume`` int16 HU (z, y, x).
        spacing: (slice, row, col) in mm; NaN where unknown (slice is NaN for 2D).
        meta: technical, non-identifying fields (Manufacturer, PhotometricInterpretation,
            TransferSyntaxUID, ...).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    """One manifest row before de-identification.

    Args:
        key: unique within the source (e.g. the relative path); hashed into ``record_id``.
        modality: ``xray`` or ``ct``.
        kind: ``xray``, ``ct_volume`` or ``ct_slice2d``.
        label: one of the four classes.
        load: reads the array.
        patient_key: the source's patient identity; ``None`` for DICOM records (PatientID is read from
            the header at ingest).
        study_key: the study identity; ``None`` for DICOM (StudyInstanceUID from the header).
        header: reads the DICOM header without pixels (DICOM records only).
        source, centre, origin: per-record values; ``None`` takes the SourceSpec's.
        rtpcr_initial: ``positive``, ``negative`` or ``""``.
        severity: 0-1, NaN when unknown.
        clinical: the five indicators (raw units) or ``None``.
        annotations: dicts with ``reader, slice_index, x0, y0, x1, y1``.
        reads: dicts with ``reader, read``.
        row: the record's line in the source's table (the header is line 1, as error messages count),
            0 when the record does not come from a table row; reported in ``quarantine.parquet``.
    """

    key: str
    modality: str
    kind: str
    label: str
    load: Callable[[], Loaded]
    patient_key: str | None = None
    study_key: str | None = None
    header: Callable[[], Dataset] | None = None
    source: str | None = None
    centre: str | None = None
    origin: str | None = None
    rtpcr_initial: str = ""
    severity: float = math.nan
    clinical: dict[str, float] | None = None
    annotations: list[dict[str, Any]] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    row: int = 0


@dataclass(frozen=True)
class Rejected:
    """A row of a source that is not a record because its data is bad; ingest quarantines it.

    Args:
        key: what the record's ``key`` would have been (hashed into ``record_id``; never stored).
        reason: why (``missing_file``, ``unknown label 'Tuberculosis'``, ...).
        row: the line in the source's table (header = line 1), 0 when not a table row.
        patient_key: the patient identity when the row names one (hashed into ``patient_id``).
        source: the row's own source name, ``None`` for the SourceSpec's.
    """

    key: str
    reason: str
    row: int = 0
    patient_key: str | None = None
    source: str | None = None


class SourceAdapter:
    """Base class: option validation, the location check, the skipped/defaulted counters and the
    rejected rows.

    Subclasses set :attr:`name`, :attr:`default_origin`, :attr:`OPTIONS` (option -> default) and
    implement :meth:`records`.
    """

    name: ClassVar[str] = ""
    default_origin: ClassVar[str] = "public"
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: SourceSpec, limits: DicomLimits | None = None) -> None:
        self.spec = spec
        self.limits = limits or DicomLimits()
        self.root = Path(spec.location).expanduser()
        unknown = sorted(set(spec.options) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(
                f"data.sources[{spec.name}].options: unknown key '{unknown[0]}' for adapter '{spec.adapter}'; "
                f"allowed: {', '.join(sorted(self.OPTIONS)) or '(none)'}"
            )
        self.options: dict[str, Any] = {**self.OPTIONS, **spec.options}
        self.skipped: Counter[str] = Counter()
        self.defaulted: Counter[str] = Counter()
        self.rejected: list[Rejected] = []
        if not self.root.exists():
            raise DataError(f"data.sources[{spec.name}].location {self.root}: not found")

    @property
    def origin(self) -> str:
        """The SourceSpec's origin, else the adapter's default."""
        return self.spec.origin or self.default_origin

    def reject(self, key: str, reason: str, *, row: int = 0, patient_key: str | None = None,
               source: str | None = None) -> None:
        """Hold back a row whose data is bad (ingest writes it to ``quarantine.parquet`` with ``reason``)."""
        self.rejected.append(Rejected(key=key, reason=reason, row=row, patient_key=patient_key, source=source or None))

    def option_error(self, key: str, expected: str) -> ConfigError:
        """A ConfigError naming an option and what was expected."""
        return ConfigError(f"data.sources[{self.spec.name}].options.{key}: expected {expected}, got {self.options[key]!r}")

    def records(self) -> list[Record]:  # pragma: no cover - abstract
        raise NotImplementedError


def _registry() -> dict[str, type[SourceAdapter]]:
    from covidscan.data.sources.ccd import CCDAdapter
    from covidscan.data.sources.covidct import CovidCTAdapter
    from covidscan.data.sources.csv_manifest import CsvAdapter
    from covidscan.data.sources.hospital import HospitalAdapter, SyntheticAdapter
    from covidscan.data.sources.imagefolder import ImageFolderAdapter
    from covidscan.data.sources.luna16 import Luna16Adapter
    from covidscan.data.sources.rsna import RSNAAdapter

    classes: list[type[SourceAdapter]] = [HospitalAdapter, SyntheticAdapter, CCDAdapter, CovidCTAdapter, RSNAAdapter,
                                          Luna16Adapter, ImageFolderAdapter, CsvAdapter]
    return {cls.name: cls for cls in classes}


ADAPTERS: tuple[str, ...] = ("hospital", "synthetic", "ccd", "covidct", "rsna", "luna16", "imagefolder", "csv")


def get_adapter(name: str) -> type[SourceAdapter]:
    """The adapter class registered under ``name``.

    Raises:
        ConfigError: no adapter has that name.
    """
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown source adapter '{name}'; known: {', '.join(sorted(registry))}")
    return registry[name]
