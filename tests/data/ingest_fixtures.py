"""Builders for the ingest tests: tiny real DICOM files (pydicom) and hospital-export folders.

Every identifying tag can be filled with a sentinel string, so tests can grep all outputs for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

SOP_CLASS = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1", "CT": "1.2.840.10008.5.1.4.1.1.2"}

# Sentinel values, valid for each tag's VR, that must never reach any output.
SENTINELS: dict[str, str] = {
    "PatientName": "SNTLPNAME^ALPHA",
    "OtherPatientIDs": "SNTLOTHERID",
    "PatientBirthDate": "18610417",
    "PatientAddress": "SNTL 2 Patient Street",
    "StudyDate": "18620518",
    "SeriesDate": "18630619",
    "AcquisitionDate": "18640720",
    "ContentDate": "18650821",
    "StudyTime": "231713.417",
    "AccessionNumber": "SNTLACC99",
    "InstitutionName": "SNTL Institution Hospital",
    "InstitutionAddress": "SNTL 1 Sentinel Road",
    "ReferringPhysicianName": "SNTLREFDOC^BETA",
    "PerformingPhysicianName": "SNTLPERFDOC^GAMMA",
    "OperatorsName": "SNTLOPERATOR^DELTA",
    "StationName": "SNTLSTATION",
    "DeviceSerialNumber": "SNTLSERIAL42",
    "StudyID": "SNTLSTUDYID",
    "StudyDescription": "SNTLSTUDYDESC",
    "SeriesDescription": "SNTLSERIESDESC",
    "ImageComments": "SNTLCOMMENT",
    "NamesOfIntendedRecipientsOfResults": "SNTLRECIPIENT^EPS",  # a PN the profile table does not list
    "DateOfLastCalibration": "18660922",  # a DA the profile table does not list
}
# Sentinels that are *invalid* for their VR: pydicom's default validation would warn and log them.
INVALID_SENTINELS: dict[str, str] = {
    "PatientBirthDate": "SNTL-BAD-BIRTHDATE",
    "StudyDate": "SNTLBADDATE",
    "InstitutionName": "SNTL " + "Overlong Institution Name " * 4,
    "StationName": "SNTL-STATION-NAME-TOO-LONG",
    "PatientSex": "SNTLSEX",
    "FrameOfReferenceUID": "SNTL.NOT.A.UID",
}
PRIVATE_SENTINEL = "SNTLPRIVATEVALUE"
OVERLAY_SENTINEL = "SNTLOVERLAYDESC"
CURVE_SENTINEL = "SNTLCURVELABEL"
NESTED_SENTINEL = "SNTLNESTED^NAME"
UID_ROOT = "1.2.826.0.1.3680043.99.424242"  # every UID the fixtures write starts with this


def _identify(ds: Dataset, patient_id: str, sentinels: bool | str) -> None:
    ds.PatientID = patient_id
    if not sentinels:
        ds.PatientName = "Test^Patient"
        return
    values = {**SENTINELS, **(INVALID_SENTINELS if sentinels == "invalid" else {})}
    with pydicom.config.disable_value_validation():
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    block = ds.private_block(0x0011, "SNTLPRIVCREATOR", create=True)
    block.add_new(0x01, "LO", PRIVATE_SENTINEL)
    ds.add_new(0x60000022, "LO", OVERLAY_SENTINEL)  # OverlayDescription
    ds.add_new(0x50002500, "LO", CURVE_SENTINEL)  # CurveLabel (retired)
    item = Dataset()
    item.PersonName = NESTED_SENTINEL
    ds.ContentSequence = Sequence([item])


def _base(modality: str, patient_id: str, study_uid: str, series_uid: str, instance: int, rows: int, cols: int,
          sentinels: bool, burned_in: str | None) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = f"{series_uid}.{instance}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = f"{series_uid}.{instance}"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.Manufacturer = "TestVendor"
    ds.ManufacturerModelName = "Model-1"
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if burned_in is not None:
        with pydicom.config.disable_value_validation():
            ds.BurnedInAnnotation = burned_in
    _identify(ds, patient_id, sentinels)
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = f"{study_uid}.9"
    return ds


def write_xray(path: Path, *, patient_id: str, study_uid: str, modality: str = "CR", rows: int = 24, cols: int = 20,
               photometric: str = "MONOCHROME2", sentinels: bool = False, burned_in: str | None = None, seed: int = 0) -> Path:
    """Write a small CR/DX image with a gradient + noise."""
    series_uid = f"{study_uid}.1"
    ds = _base(modality, patient_id, study_uid, series_uid, 1, rows, cols, sentinels, burned_in)
    ds.PhotometricInterpretation = photometric
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.ViewPosition = "PA"
    rng = np.random.default_rng(seed)
    pixels = (np.linspace(0, 3000, rows * cols).reshape(rows, cols) + rng.integers(0, 50, (rows, cols))).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with pydicom.config.disable_value_validation():
        ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(folder: Path, *, patient_id: str, study_uid: str, n_slices: int = 4, rows: int = 16, cols: int = 16,
                    thickness: float = 2.5, sentinels: bool = False, burned_in: str | None = None, shuffle_names: bool = True) -> Path:
    """Write a CT series, one file per slice; file names do not follow z order when ``shuffle_names``."""
    series_uid = f"{study_uid}.2"
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(n_slices))[::-1] if shuffle_names else list(range(n_slices))
    for i in range(n_slices):
        ds = _base("CT", patient_id, study_uid, series_uid, i + 1, rows, cols, sentinels, burned_in)
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = thickness
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, i * thickness]
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -1024
        ds.PixelData = np.full((rows, cols), 1024 + 10 * i, dtype=np.uint16).tobytes()  # HU = 10 * z index
        with pydicom.config.disable_value_validation():
            ds.save_as(folder / f"slice_{order[i]:03d}.dcm", enforce_file_format=True)
    return folder


def write_hospital_export(root: Path, cases: list[dict], *, clinical: bool = True) -> Path:
    """A hospital export: the DICOM of ``cases`` + labels.csv (+ clinical/annotations/reads).

    Each case: ``rel`` (path under root), ``modality`` (xray|ct), ``label``, ``patient_id``, ``study_uid``
    and optional ``sentinels``, ``burned_in``, ``centre``, ``severity``, ``rtpcr_initial``.
    """
    import csv

    labels, clin, ann, reads = [], [], [], []
    for i, case in enumerate(cases):
        path = root / case["rel"]
        kw = {"patient_id": case["patient_id"], "study_uid": case["study_uid"], "sentinels": case.get("sentinels", False),
              "burned_in": case.get("burned_in")}
        if case["modality"] == "xray":
            write_xray(path, seed=i, **kw)
        else:
            write_ct_series(path, **kw)
        labels.append({"path": case["rel"], "label": case["label"], "modality": case["modality"], "source": case.get("source", ""),
                       "centre": case.get("centre", ""), "origin": case.get("origin", ""),
                       "rtpcr_initial": case.get("rtpcr_initial", ""), "severity": case.get("severity", "")})
        if clinical and case["label"] == "covid19":
            clin.append({"path": case["rel"], "wbc": 5.5 + i, "neutrophil_pct": 60.0, "lymphocyte_pct": 25.0,
                         "procalcitonin": 0.05, "crp": 12.0})
            ann.append({"path": case["rel"], "reader": "reader1", "slice_index": 1 if case["modality"] == "ct" else 0,
                        "x0": 2, "y0": 3, "x1": 10, "y1": 12})
            ann.append({"path": case["rel"], "reader": "adjudicated", "slice_index": 1 if case["modality"] == "ct" else 0,
                        "x0": 2, "y0": 3, "x1": 11, "y1": 12})
        reads.append({"path": case["rel"], "reader": "Rad-5th", "read": int(case["label"] == "covid19")})
    for name, rows in (("labels.csv", labels), ("clinical.csv", clin), ("annotations.csv", ann), ("reads.csv", reads)):
        if not rows:
            continue
        with open(root / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root
