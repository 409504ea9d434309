"""Builds real DICOM files for tests: X-ray (CR/DX), CT slices and series, enhanced multi-frame CT,
every transfer syntax pydicom (or gdcm) can encode, and malformed variants.

Every dataset carries fake identifying headers (``SENTINEL_*`` strings) so tests can check that no
identifying field reaches a reader's ``meta``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

CR_SOP = "1.2.840.10008.5.1.4.1.1.1"
DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_SOP = "1.2.840.10008.5.1.4.1.1.2.1"
MR_SOP = "1.2.840.10008.5.1.4.1.1.4"
RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"

SENTINELS = {
    "PatientName": "SENTINEL^PATIENT",
    "PatientID": "SENTINEL_PID_123",
    "PatientBirthDate": "19010101",
    "InstitutionName": "SENTINEL_HOSPITAL",
    "ReferringPhysicianName": "SENTINEL^DOCTOR",
    "StudyDate": "20200317",
    "AccessionNumber": "SENTINEL_ACC",
    "StationName": "SENTINEL_STATION",
}

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _base(sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Manufacturer = "ACME Imaging"
    ds.ManufacturerModelName = "Model 7"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in SENTINELS.items():
        setattr(ds, keyword, value)
    return ds


def _pixels(ds: Dataset, stored: np.ndarray, *, bits_allocated: int, bits_stored: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}[
        (bits_allocated, signed)
    ]
    ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()


def ramp(rows: int = 32, cols: int = 24, lo: int = 0, hi: int = 4000) -> np.ndarray:
    """A deterministic, non-symmetric test image (int64 values in [lo, hi])."""
    y, x = np.mgrid[0:rows, 0:cols]
    return (lo + (hi - lo) * (0.6 * y / max(rows - 1, 1) + 0.4 * x / max(cols - 1, 1))).round().astype(np.int64)


def xray(
    stored: np.ndarray | None = None,
    *,
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    rescale: tuple[float, float] | None = None,
    pixel_spacing: tuple[float, float] | None = (0.2, 0.2),
    imager_spacing: tuple[float, float] | None = None,
) -> Dataset:
    """A CR or DX image with 16-bit unsigned storage (BitsStored `bits_stored`)."""
    stored = ramp(hi=2**bits_stored - 1) if stored is None else stored
    ds = _base(CR_SOP if modality == "CR" else DX_SOP, modality)
    ds.PhotometricInterpretation = photometric
    _pixels(ds, stored, bits_allocated=16, bits_stored=bits_stored, signed=False)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.LUTData = np.asarray(voi_lut).astype("<u2").tobytes()
        ds.VOILUTSequence = DicomSequence([item])
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_spacing)
    return ds


def ct_slice(
    hu: np.ndarray,
    *,
    z: float = 0.0,
    position: Sequence[float] | None = None,
    orientation: Sequence[float] = AXIAL,
    spacing: tuple[float, float] = (0.7, 0.7),
    series_uid: str | None = None,
    instance: int = 1,
    slope: float = 1.0,
    intercept: float = -1024.0,
    padding: int | None = None,
) -> Dataset:
    """A CT slice whose stored values are (hu - intercept) / slope (16-bit signed)."""
    ds = _base(CT_SOP, "CT")
    ds.PhotometricInterpretation = "MONOCHROME2"
    stored = np.rint((np.asarray(hu, dtype=np.float64) - intercept) / slope).astype(np.int64)
    _pixels(ds, stored, bits_allocated=16, bits_stored=16, signed=True)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 1.0
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = list(position) if position is not None else [-100.0, -120.0, z]
    ds.InstanceNumber = instance
    if series_uid is not None:
        ds.SeriesInstanceUID = series_uid
    if padding is not None:
        ds.PixelPaddingValue = padding
    return ds


def volume(n: int = 6, rows: int = 16, cols: int = 12) -> np.ndarray:
    """A (z, y, x) HU volume whose value encodes z (100 HU per slice) plus an in-plane ramp."""
    base = ramp(rows, cols, lo=-1000, hi=-200)
    return np.stack([base + 100 * k for k in range(n)]).astype(np.int64)


def enhanced_ct(
    hu: np.ndarray,
    positions: Sequence[Sequence[float]],
    *,
    orientation: Sequence[float] = AXIAL,
    spacing: tuple[float, float] = (0.7, 0.7),
    slope: float = 1.0,
    intercept: float = -1024.0,
    per_frame_rescale: bool = False,
) -> Dataset:
    """An Enhanced CT multi-frame dataset, positions in PerFrameFunctionalGroupsSequence."""
    ds = _base(ENHANCED_CT_SOP, "CT")
    ds.PhotometricInterpretation = "MONOCHROME2"
    stored = np.rint((np.asarray(hu, dtype=np.float64) - intercept) / slope).astype(np.int64)
    _pixels(ds, stored, bits_allocated=16, bits_stored=16, signed=True)
    ds.NumberOfFrames = int(hu.shape[0])
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = list(spacing)
    measures.SliceThickness = 1.0
    shared.PixelMeasuresSequence = DicomSequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = list(orientation)
    shared.PlaneOrientationSequence = DicomSequence([orient])
    if not per_frame_rescale:
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "HU"
        shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for pos in positions:
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [float(v) for v in pos]
        item.PlanePositionSequence = DicomSequence([plane])
        if per_frame_rescale:
            transform = Dataset()
            transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "HU"
            item.PixelValueTransformationSequence = DicomSequence([transform])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    return ds


def save(ds: Dataset, path: Path, syntax: str | UID = ExplicitVRLittleEndian) -> Path:
    """Write `ds` to `path` in the given transfer syntax (compressing or byte-swapping as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    syntax = UID(syntax)
    ds = ds.copy()
    ds.file_meta = ds.file_meta.copy() if hasattr(ds, "file_meta") else FileMetaDataset()
    if syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    elif syntax == ExplicitVRBigEndian:
        ds.file_meta.TransferSyntaxUID = syntax
        dtype = np.dtype(f"{'i' if ds.PixelRepresentation else 'u'}{ds.BitsAllocated // 8}")
        ds.PixelData = np.frombuffer(ds.PixelData, dtype=dtype.newbyteorder("<")).astype(dtype.newbyteorder(">")).tobytes()
        ds.save_as(path, implicit_vr=False, little_endian=False, enforce_file_format=True)
    elif syntax in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    elif syntax.is_compressed and syntax in GDCM_ONLY:
        raw = path.with_suffix(".raw.dcm")
        ds.save_as(raw, enforce_file_format=True)
        _gdcm_transcode(raw, path, syntax)
        raw.unlink()
    else:
        ds.compress(syntax)
        ds.save_as(path, enforce_file_format=True)
    return path


GDCM_ONLY = {UID("1.2.840.10008.1.2.4.70"), UID("1.2.840.10008.1.2.4.57")}


def _gdcm_transcode(src: Path, dst: Path, syntax: UID) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    if not reader.Read():
        raise RuntimeError(f"gdcm cannot read {src}")
    change = gdcm.ImageChangeTransferSyntax()
    ts = {
        "1.2.840.10008.1.2.4.70": gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        "1.2.840.10008.1.2.4.57": gdcm.TransferSyntax.JPEGLosslessProcess14,
    }[str(syntax)]
    change.SetTransferSyntax(gdcm.TransferSyntax(ts))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"gdcm cannot transcode {src} to {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"gdcm cannot write {dst}")


def write_series(
    folder: Path,
    hu: np.ndarray,
    *,
    z0: float = -50.0,
    spacing_z: float = 2.5,
    z_positions: Sequence[float] | None = None,
    orientation: Sequence[float] = AXIAL,
    shuffle_seed: int | None = 0,
    syntax: str | UID = ExplicitVRLittleEndian,
) -> list[Path]:
    """One file per slice, slice k at z0 + k * spacing_z (or z_positions[k]).

    File names and InstanceNumbers are shuffled (seeded) so that neither gives the slice order.
    Returns the paths in true z order.
    """
    n = hu.shape[0]
    zs = list(z_positions) if z_positions is not None else [z0 + k * spacing_z for k in range(n)]
    series_uid = generate_uid()
    labels = list(range(n))
    instances = list(range(1, n + 1))
    if shuffle_seed is not None:
        rng = random.Random(shuffle_seed)
        rng.shuffle(labels)
        rng.shuffle(instances)
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    paths = []
    for k in range(n):
        position = (np.array([-100.0, -120.0, 0.0]) + zs[k] * normal).tolist()
        ds = ct_slice(hu[k], position=position, orientation=orientation, series_uid=series_uid, instance=instances[k])
        paths.append(save(ds, folder / f"IM{labels[k]:04d}.dcm", syntax))
    return paths


def pydicom_read(path: Path) -> Dataset:
    """Plain pydicom read (for tests that edit a written file)."""
    import pydicom

    return pydicom.dcmread(path)


def generate_frames(data: bytes, number_of_frames: int):
    """pydicom.encaps.generate_frames, re-exported for tests."""
    from pydicom.encaps import generate_frames as _gen

    return _gen(data, number_of_frames=number_of_frames)


def jpeg_baseline_xray(image: np.ndarray, quality: int = 95) -> Dataset:
    """An 8-bit DX image encapsulated as JPEG Baseline (encoded with Pillow; pydicom has no encoder)."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    ds = xray(image.astype(np.int64), modality="DX", bits_stored=8)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    buf = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "01"
    return ds
