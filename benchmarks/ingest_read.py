"""Throughput of covidscan's DICOM reader against plain pydicom, measured in the same run.

Writes N synthetic uncompressed 512x512 CT slices (one series) to a temporary folder, then times
(best of --repeat runs):

* reference: ``pydicom.dcmread(f).pixel_array`` for every file;
* ``read_image`` for every file (strict checks, HU as float32);
* ``read_series`` on the folder (header pass, ordering checks, int16 HU volume).

Prints slices/s for each and the ratio to the reference (> 1 means faster than plain pydicom).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ingest_read.py --n 40 --repeat 3
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from covidscan.config import DicomLimits
from covidscan.data.dicom import read_image, read_series


def write_slices(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """N axial CT slices of one series, 2.5 mm apart, random-ish HU content."""
    rng = np.random.default_rng(seed)
    series, study = generate_uid(), generate_uid()
    paths = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", study, series
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-180.0, -180.0, 2.5 * k]
        ds.InstanceNumber = k + 1
        ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.int16).tobytes()
        path = folder / f"slice_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="number of slices (default 40)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    args = parser.parse_args()
    limits = DicomLimits()
    with tempfile.TemporaryDirectory(prefix="covidscan-bench-") as tmp:
        folder = Path(tmp) / "series"
        folder.mkdir()
        files = write_slices(folder, args.n, args.size)
        best_of(1, lambda: [pydicom.dcmread(f).pixel_array for f in files])  # warm the page cache
        ref = best_of(args.repeat, lambda: [pydicom.dcmread(f).pixel_array for f in files])
        img = best_of(args.repeat, lambda: [read_image(f, limits) for f in files])
        vol = best_of(args.repeat, lambda: read_series(folder, limits))
    n = args.n
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()} pydicom {pydicom.__version__}")
    print(f"{n} uncompressed {args.size}x{args.size} CT slices, best of {args.repeat}")
    print(f"  pydicom dcmread().pixel_array  {n / ref:8.1f} slices/s  (reference)")
    print(f"  covidscan read_image           {n / img:8.1f} slices/s  ratio {ref / img:.2f}")
    print(f"  covidscan read_series          {n / vol:8.1f} slices/s  ratio {ref / vol:.2f}")


if __name__ == "__main__":
    main()
