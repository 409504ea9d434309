"""Every synthetic file is proper, decodable DICOM with the sources' quirks."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
)

from covidscan.data.synth import generate, plan_dataset
from covidscan.data.synth.identity import PRIVATE_CREATOR, PRIVATE_GROUP

from .conftest import TINY

SOP = {"CR": ComputedRadiographyImageStorage, "DX": DigitalXRayImageStorageForPresentation}


def _files(root: Path) -> list[Path]:
    return sorted((root / "dicom").rglob("*.dcm"))


def test_every_file_opens_and_decodes(tiny_root: Path) -> None:
    files = _files(tiny_root)
    assert len(files) > 50
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        pixels = ds.pixel_array
        assert pixels.shape[-2:] == (ds.Rows, ds.Columns)
        assert int(ds.BitsStored) <= int(ds.BitsAllocated)
        if ds.Modality in SOP:
            assert ds.SOPClassUID == SOP[ds.Modality]
            assert pixels.ndim == 2 and pixels.max() < 2 ** int(ds.BitsStored)
        elif ds.SOPClassUID == EnhancedCTImageStorage:
            assert pixels.shape[0] == int(ds.NumberOfFrames) == len(ds.PerFrameFunctionalGroupsSequence)
            shared = ds.SharedFunctionalGroupsSequence[0]
            assert shared.PixelValueTransformationSequence[0].RescaleType == "HU"
            assert float(shared.PixelMeasuresSequence[0].SliceThickness) > 0
        else:
            assert ds.SOPClassUID == CTImageStorage
            for kw in ("ImagePositionPatient", "ImageOrientationPatient", "SliceThickness", "PixelSpacing",
                       "RescaleSlope", "RescaleIntercept"):
                assert kw in ds, f"{path}: {kw} missing"
            hu = pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert hu.min() >= -3100 and hu.max() < 3100


def test_same_seed_gives_byte_identical_files(tiny_root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(TINY, again)

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    first, second = digests(tiny_root), digests(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_sources_carry_their_quirks(tiny_root: Path, tables: dict) -> None:
    seen = defaultdict(set)
    for row in tables["labels"]:
        p = tiny_root / row["path"]
        first = p if p.is_file() else sorted(p.iterdir())[0]
        ds = pydicom.dcmread(first, stop_before_pixels=True)
        key = (row["source"], row["centre"], row["modality"])
        seen[key].add(("photometric", ds.PhotometricInterpretation))
        seen[key].add(("syntax", ds.file_meta.TransferSyntaxUID.name))
        seen[key].add(("manufacturer", str(ds.get("Manufacturer", ""))))
        seen[key].add(("multiframe", ds.SOPClassUID == EnhancedCTImageStorage))
        if row["modality"] == "ct" and ds.SOPClassUID == CTImageStorage:
            seen[key].add(("thickness", round(float(ds.SliceThickness))))
            seen[key].add(("slices", len(list(p.iterdir()))))
        if ds.get("Modality") == "DX":
            seen[key].add(("imager_spacing", "ImagerPixelSpacing" in ds and "PixelSpacing" not in ds))
    assert ("photometric", "MONOCHROME1") in seen[("youan", "youan", "xray")]
    assert ("photometric", "MONOCHROME2") in seen[("rsna", "rsna", "xray")]
    assert ("syntax", "JPEG-LS Lossless Image Compression") in seen[("ccd", "ccd", "xray")]
    assert ("syntax", "RLE Lossless") in seen[("icnp", "icnp", "ct")]
    assert ("imager_spacing", True) in seen[("ccd", "ccd", "xray")]
    assert ("multiframe", True) in seen[("mildct", "centre_c", "ct")]
    slice_counts = {k: {v for n, v in s if n == "slices"} for k, s in seen.items() if k[2] == "ct"}
    distinct = set().union(*[v for k, v in slice_counts.items() if v])
    assert len(distinct) >= 3, slice_counts
    manufacturers = {v for s in seen.values() for n, v in s if n == "manufacturer" and v}
    assert {"GE MEDICAL SYSTEMS", "SIEMENS"} <= manufacturers


def test_ct_series_sort_by_position_not_name_or_instance(tiny_root: Path, tables: dict) -> None:
    descending = 0
    for row in tables["labels"]:
        p = tiny_root / row["path"]
        if row["modality"] != "ct" or not p.is_dir():
            continue
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(p.iterdir())]
        z_by_name = [float(h.ImagePositionPatient[2]) for h in headers]
        assert z_by_name != sorted(z_by_name)  # file names are opaque and shuffled
        by_z = sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))
        instances = [int(h.InstanceNumber) for h in by_z]
        descending += instances == sorted(instances, reverse=True)
        assert len({h.SeriesInstanceUID for h in headers}) == 1
        assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert descending > 0


def test_identifying_headers_come_from_the_identity_function(tiny_root: Path, tables: dict) -> None:
    plan = plan_dataset(TINY)
    by_path = {case.path: case for case in plan.cases}
    for row in tables["labels"][:: max(1, len(tables["labels"]) // 10)]:
        case = by_path[row["path"]]
        p = tiny_root / row["path"]
        ds = pydicom.dcmread(p if p.is_file() else sorted(p.iterdir())[0], stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber",
                        "InstitutionName", "ReferringPhysicianName", "OtherPatientIDs"):
            assert str(ds[keyword].value) == case.identity[keyword]
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        assert block[0x01].value == case.identity["PrivatePatientRef"]
        for value in case.identity.values():
            if len(value) >= 4:
                assert value not in row["path"]


def test_a_custom_identity_function_plants_its_values() -> None:
    def sentinel(rng: np.random.Generator) -> dict[str, str]:
        return {"PatientName": "SENTINEL^NAME", "PatientID": f"SENTINEL{int(rng.integers(1000))}",
                "InstitutionName": "SENTINEL HOSPITAL"}

    plan = plan_dataset(TINY, identity=sentinel)
    assert all(c.identity["PatientName"] == "SENTINEL^NAME" for c in plan.cases)
    assert all("SENTINEL" not in c.path for c in plan.cases)


@pytest.mark.parametrize("bad", ["not-synthetic.txt"])
def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path, bad: str) -> None:
    from covidscan.errors import DataError

    (tmp_path / bad).write_text("keep me")
    with pytest.raises(DataError, match="refusing"):
        generate(TINY, tmp_path)
    assert (tmp_path / bad).read_text() == "keep me"
