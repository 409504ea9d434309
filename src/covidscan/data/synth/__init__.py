"""The synthetic hybrid DICOM dataset (SPEC.md section 1): phantoms, lesions, sources, writer.

Public API::

    from covidscan.data.synth import generate, plan_dataset, fake_identity, SCALES, SOURCES
    generate(SynthConfig(scale="tiny", seed=0), "data/raw/synthetic")
"""

from covidscan.data.synth.generate import (
    ANNOTATION_COLUMNS,
    CLINICAL_COLUMNS,
    LABEL_COLUMNS,
    READ_COLUMNS,
    DatasetPlan,
    SynthSummary,
    generate,
    plan_dataset,
)
from covidscan.data.synth.identity import PATIENT_KEYS, fake_identity
from covidscan.data.synth.scales import SCALES, ScaleSpec
from covidscan.data.synth.sources import SOURCES, SynthSource
from covidscan.data.synth.truth import READERS

__all__ = [
    "ANNOTATION_COLUMNS", "CLINICAL_COLUMNS", "LABEL_COLUMNS", "READ_COLUMNS", "DatasetPlan", "PATIENT_KEYS",
    "READERS", "SCALES", "SOURCES", "ScaleSpec", "SynthSource", "SynthSummary", "fake_identity", "generate",
    "plan_dataset",
]
