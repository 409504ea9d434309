"""Write synthetic images as proper DICOM: CR/DX X-rays, CT series (one file per slice) and Enhanced CT.

Everything written is deterministic: UIDs come from ``generate_uid(entropy_srcs=...)`` over the seed and
the case key, dates and times come from the fake identity, and nothing reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from covidscan.data.synth.identity import PRIVATE_CREATOR, PRIVATE_GROUP, Identity

SOP_CLASSES = {"CR": ComputedRadiographyImageStorage, "DX": DigitalXRayImageStorageForPresentation, "CT": CTImageStorage}
TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
}
_ENCODER_PLUGIN = {"rle": "gdcm", "jpegls": "pyjpegls", "j2k": "pylibjpeg"}


@dataclass(frozen=True)
class StudyInfo:
    """What every file of one case shares."""

    uid_seed: str  # entropy for this case's UIDs (seed + case key)
    identity: Identity
    manufacturer: str
    model: str
    transfer_syntax: str  # key of TRANSFER_SYNTAXES

    def uid(self, *parts: object) -> str:
        return generate_uid(entropy_srcs=[self.uid_seed, *[str(p) for p in parts]])


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationVersionName = "COVIDSCAN_SYNTH"
    return meta


def _base(study: StudyInfo, sop_class: str, sop_uid: str, modality: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid, ExplicitVRLittleEndian)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study.uid("study")
    ds.SeriesInstanceUID = study.uid("series", series_number)
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.Manufacturer = study.manufacturer
    ds.ManufacturerModelName = study.model
    ds.BodyPartExamined = "CHEST"
    ident = dict(study.identity)
    private = ident.pop("PrivatePatientRef", None)
    for keyword, value in ident.items():
        setattr(ds, keyword, value)
    date = ident.get("StudyDate", "")
    time = ident.get("StudyTime", "")
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    if private is not None:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x01, "LO", private)
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def _save(ds: Dataset, pixels: np.ndarray, transfer_syntax: str, path: Path) -> None:
    """Encode (if a compressed syntax is asked for) and write with a proper file meta header."""
    uid = TRANSFER_SYNTAXES[transfer_syntax]
    if uid.is_compressed:
        ds.compress(uid, np.ascontiguousarray(pixels), encoding_plugin=_ENCODER_PLUGIN[transfer_syntax],
                    generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = uid
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_xray(
    path: Path,
    stored: np.ndarray,
    study: StudyInfo,
    *,
    modality: str,
    photometric: str,
    bits_stored: int,
    spacing_mm: float,
    spacing_tag: str,
    window: tuple[float, float] | None,
) -> None:
    """Write one chest X-ray (CR or DX Image Storage).

    Args:
        path: the .dcm file to write.
        stored: stored pixel values (uint8/uint16, rows x cols), already inverted for MONOCHROME1.
        study: shared case information.
        modality: "CR" | "DX".
        photometric: "MONOCHROME1" | "MONOCHROME2".
        bits_stored: significant bits of ``stored``.
        spacing_mm: pixel spacing.
        spacing_tag: "PixelSpacing" or "ImagerPixelSpacing".
        window: (centre, width) VOI window, or None.
    """
    sop_class = SOP_CLASSES[modality]
    ds = _base(study, sop_class, study.uid("image", 1), modality, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.PhotometricInterpretation = photometric
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME2" else -1
    setattr(ds, spacing_tag, [f"{spacing_mm:.6g}", f"{spacing_mm:.6g}"])
    if window is not None:
        ds.WindowCenter = f"{window[0]:.6g}"
        ds.WindowWidth = f"{window[1]:.6g}"
    _set_pixels(ds, stored, bits_stored, signed=False)
    _save(ds, stored, study.transfer_syntax, path)


@dataclass(frozen=True)
class CTGeometry:
    """Where the slices of one CT series lie."""

    origin_xy: tuple[float, float]  # ImagePositionPatient x, y (centre of the first pixel), mm
    z: Sequence[float]  # slice centres, ascending, mm
    pixel_spacing: float
    thickness: float
    signed: bool  # int16 with intercept 0, else 12-bit unsigned with intercept -1024

    @property
    def intercept(self) -> float:
        return 0.0 if self.signed else -1024.0


def hu_to_stored(hu: np.ndarray, signed: bool) -> np.ndarray:
    """Hounsfield units to stored CT values (RescaleSlope 1; intercept 0 signed or -1024 unsigned)."""
    if signed:
        return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    return np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)


def _ct_common(ds: Dataset, study: StudyInfo, geom: CTGeometry) -> None:
    ds.FrameOfReferenceUID = study.uid("frame")
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "FFS"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PhotometricInterpretation = "MONOCHROME2"


def write_ct_slices(
    folder: Path,
    stored: np.ndarray,
    first_index: int,
    n_total: int,
    study: StudyInfo,
    geom: CTGeometry,
    file_names: Sequence[str],
    descending_instances: bool,
) -> None:
    """Write a run of CT slices (CT Image Storage, one file per slice) of one series.

    Args:
        folder: the series folder.
        stored: (k, rows, cols) stored values of slices ``first_index .. first_index + k - 1``.
        first_index: index of the first slice of ``stored`` in the ascending-z series.
        n_total: slices in the whole series.
        study: shared case information.
        geom: slice positions and spacing.
        file_names: the name of every slice file of the series (opaque, not in z order).
        descending_instances: number instances head to foot (so they disagree with ascending z).
    """
    bits = 16 if geom.signed else 12
    # one dataset per run, updated per slice (building a dataset costs more than writing it)
    ds = _base(study, CTImageStorage, study.uid("slice", first_index), "CT", 2)
    _ct_common(ds, study, geom)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceThickness = f"{geom.thickness:.4g}"
    ds.PixelSpacing = [f"{geom.pixel_spacing:.6g}", f"{geom.pixel_spacing:.6g}"]
    ds.RescaleIntercept = f"{geom.intercept:.0f}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    x0, y0 = geom.origin_xy
    for j in range(stored.shape[0]):
        k = first_index + j
        sop_uid = study.uid("slice", k)
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.InstanceNumber = (n_total - k) if descending_instances else (k + 1)
        z = float(geom.z[k])
        ds.ImagePositionPatient = [f"{x0:.4f}", f"{y0:.4f}", f"{z:.4f}"]
        ds.SliceLocation = f"{z:.4f}"
        _set_pixels(ds, stored[j], bits, geom.signed)
        _save(ds, stored[j], study.transfer_syntax, folder / file_names[k])


def write_ct_multiframe(path: Path, stored: np.ndarray, study: StudyInfo, geom: CTGeometry) -> None:
    """Write a whole CT volume as one Enhanced CT Image Storage file (frames in ascending z).

    Args:
        path: the .dcm file.
        stored: (slices, rows, cols) stored values.
        study: shared case information.
        geom: slice positions and spacing.
    """
    sop_uid = study.uid("enhanced", 1)
    ds = _base(study, EnhancedCTImageStorage, sop_uid, "CT", 3)
    _ct_common(ds, study, geom)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = int(stored.shape[0])
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionNumber = 1
    dim_org = study.uid("dimension-organization")
    org = Dataset()
    org.DimensionOrganizationUID = dim_org
    ds.DimensionOrganizationSequence = DicomSequence([org])
    idx_stack, idx_pos = Dataset(), Dataset()
    idx_stack.DimensionOrganizationUID = idx_pos.DimensionOrganizationUID = dim_org
    idx_stack.DimensionIndexPointer = 0x00209056  # StackID
    idx_stack.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
    idx_pos.DimensionIndexPointer = 0x00209057  # InStackPositionNumber
    idx_pos.FunctionalGroupPointer = 0x00209111
    ds.DimensionIndexSequence = DicomSequence([idx_stack, idx_pos])

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{geom.pixel_spacing:.6g}", f"{geom.pixel_spacing:.6g}"]
    measures.SliceThickness = f"{geom.thickness:.4g}"
    measures.SpacingBetweenSlices = f"{geom.thickness:.4g}"
    shared.PixelMeasuresSequence = DicomSequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared.PlaneOrientationSequence = DicomSequence([orient])
    transform = Dataset()
    transform.RescaleIntercept = f"{geom.intercept:.0f}"
    transform.RescaleSlope = "1"
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared.CTImageFrameTypeSequence = DicomSequence([frame_type])
    voi = Dataset()
    voi.WindowCenter = "-600"
    voi.WindowWidth = "1500"
    shared.FrameVOILUTSequence = DicomSequence([voi])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    per_frame = []
    x0, y0 = geom.origin_xy
    for k, z in enumerate(geom.z):
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [f"{x0:.4f}", f"{y0:.4f}", f"{float(z):.4f}"]
        item.PlanePositionSequence = DicomSequence([pos])
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, k + 1]
        item.FrameContentSequence = DicomSequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    bits = 16 if geom.signed else 12
    _set_pixels(ds, stored, bits, geom.signed)
    _save(ds, stored, study.transfer_syntax, path)
