"""A tiny ingest output folder (manifest + npy arrays + clinical/annotations/reads) for split and
validation tests, written to the contract in HELPERS.md. Images are smooth random fields (distinct
perceptual hashes per patient); CT volumes are int16 HU.

Not the synthetic DICOM generator: this writes the *ingest output* directly, so the split and
validation code can be tested on its own, with defects planted precisely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covidscan.config import SplitsConfig, SubsetSpec

SIZE = 32  # rows = cols of every fixture image
CT_SLICES = 5
CENTRES = ("centre_a", "centre_b", "centre_c", "centre_d")

# (modality, source, origin, label, n patients at size 1)
LAYOUT: tuple[tuple[str, str, str, str, int], ...] = (
    ("xray", "ccd", "public", "covid19", 6),
    ("xray", "rsna", "public", "normal", 6),
    ("xray", "rsna", "public", "pneumonia", 6),
    ("xray", "youan", "hospital", "covid19", 5),
    ("xray", "youan", "hospital", "normal", 5),
    ("xray", "youan", "hospital", "pneumonia", 5),
    ("xray", "youan", "hospital", "influenza", 5),
    ("ct", "luna16", "public", "normal", 6),
    ("ct", "icnp", "public", "pneumonia", 6),
    ("ct", "youan", "hospital", "covid19", 8),
    ("ct", "youan", "hospital", "influenza", 5),
    ("ct", "youan", "hospital", "normal", 5),
    ("ct", "youan", "hospital", "pneumonia", 5),
)

SUBSETS: dict[str, SubsetSpec] = {
    "XPDS": SubsetSpec(modality="xray", sources="public", classes=["normal", "pneumonia", "covid19"]),
    "XHDS": SubsetSpec(modality="xray", sources="hospital", classes=["normal", "pneumonia", "covid19", "influenza"]),
    "CTPDS": SubsetSpec(modality="ct", sources="public", classes=["normal", "pneumonia"]),
    "CTHDS": SubsetSpec(modality="ct", sources=["youan"], classes=["normal", "covid19", "influenza"]),
    "CADS": SubsetSpec(modality="ct", sources="hospital", classes=["covid19"]),
    "CSDS": SubsetSpec(modality="ct", sources="all", classes=["covid19", "normal", "pneumonia"]),
}
SPLITS = SplitsConfig(n_folds=3, test_size=0.25, centre_subsets=["CSDS"], centre_test=["centre_d"])


def pseudonym(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def smooth_image(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A smooth random field in [0, 1] (random 6x6 grid, bicubic upsampled)."""
    coarse = rng.random((6, 6)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


@dataclass
class IngestFixture:
    root: Path
    manifest: pd.DataFrame
    clinical: pd.DataFrame
    annotations: pd.DataFrame
    reads: pd.DataFrame

    def write(self) -> "IngestFixture":
        self.manifest.to_parquet(self.root / "manifest.parquet", index=False)
        self.clinical.to_parquet(self.root / "clinical.parquet", index=False)
        self.annotations.to_parquet(self.root / "annotations.parquet", index=False)
        self.reads.to_parquet(self.root / "reads.parquet", index=False)
        return self


def _save(root: Path, rel: str, arr: np.ndarray) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return hashlib.sha256(arr.tobytes()).hexdigest()


def build_ingest(root: str | Path, seed: int = 0, scale: int = 1, near_duplicate: bool = True) -> IngestFixture:
    """Write a tiny, clean ingest folder and return its tables.

    Args:
        root: folder to write into (created).
        seed: random seed (images, clinical values, boxes).
        scale: multiplies the patient counts of :data:`LAYOUT`.
        near_duplicate: also add, per modality, a hospital record whose image is a public record's
            image plus tiny noise, under a different patient (a cross-source near-duplicate).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, clinical, annotations, reads = [], [], [], []
    n = 0
    first_public: dict[str, tuple[np.ndarray, str]] = {}

    def add(modality: str, source: str, origin: str, label: str, patient: str, image: np.ndarray, centre: str) -> str:
        nonlocal n
        n += 1
        rid = f"r{n:05d}"
        if modality == "xray":
            arr = (image * 3000.0 + 200.0).astype(np.float32)
            kind, n_slices, spacing = "xray", 1, (0.7, 0.7, float("nan"))
        else:
            vol = np.stack([image * (0.9 + 0.05 * k) for k in range(CT_SLICES)])
            arr = (vol * 1300.0 - 1000.0).round().astype(np.int16)
            kind, n_slices, spacing = "ct_volume", CT_SLICES, (0.8, 0.8, 5.0)
        rel = f"arrays/{rid}.npy"
        sha = _save(root, rel, arr)
        rows.append(
            dict(
                record_id=rid, patient_id=pseudonym("p", patient), study_id=pseudonym("s", patient + rid),
                modality=modality, kind=kind, label=label, source=source, centre=centre, origin=origin,
                array_path=rel, rows=SIZE, cols=SIZE, n_slices=n_slices, spacing_row=spacing[0],
                spacing_col=spacing[1], spacing_slice=spacing[2], manufacturer="ACME" if origin == "hospital" else "",
                transfer_syntax="1.2.840.10008.1.2.1", photometric="MONOCHROME2",
                rtpcr_initial="positive" if label == "covid19" else "negative",
                severity=float(rng.uniform(0.1, 0.9)) if label != "normal" else 0.0, content_sha256=sha,
            )
        )
        reads.extend(
            dict(record_id=rid, reader=r, read=int(rng.random() < 0.5))
            for r in ("Respira.", "Emerg.", "Intern", "Rad-5th", "Rad-3rd")
        )
        if label == "covid19":
            for reader in ("reader1", "reader2", "adjudicated"):
                side = float(rng.uniform(20, 60)) * SIZE / 512  # 16-64 px at 512 scale
                x0, y0 = float(rng.uniform(0, SIZE - side - 1)), float(rng.uniform(0, SIZE - side - 1))
                annotations.append(
                    dict(record_id=rid, reader=reader, slice_index=int(rng.integers(0, n_slices)),
                         x0=x0, y0=y0, x1=x0 + side, y1=y0 + side)
                )
            if modality == "ct" and origin == "hospital":
                clinical.append(
                    dict(record_id=rid, patient_id=pseudonym("p", patient), wbc=float(rng.uniform(3, 12)),
                         neutrophil_pct=float(rng.uniform(40, 75)), lymphocyte_pct=float(rng.uniform(10, 40)),
                         procalcitonin=float(rng.uniform(0.02, 0.5)), crp=float(rng.uniform(1, 80)))
                )
        return rid

    for modality, source, origin, label, count in LAYOUT:
        for i in range(count * scale):
            patient = f"{source}-{modality}-{label}-{i}"
            centre = CENTRES[i % len(CENTRES)] if modality == "ct" else source
            image = smooth_image(rng)
            add(modality, source, origin, label, patient, image, centre)
            if origin == "public":
                first_public.setdefault(modality, (image, label))
            if i % 3 == 1:  # a second study of the same patient
                add(modality, source, origin, label, patient, np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1), centre)
    if near_duplicate:
        for modality, (image, label) in first_public.items():
            noisy = np.clip(image + 0.003 * rng.standard_normal(image.shape), 0, 1).astype(np.float32)
            add(modality, "youan", "hospital", label, f"neardup-{modality}", noisy, "centre_a")
    manifest = pd.DataFrame(rows)
    return IngestFixture(root, manifest, pd.DataFrame(clinical), pd.DataFrame(annotations), pd.DataFrame(reads)).write()
