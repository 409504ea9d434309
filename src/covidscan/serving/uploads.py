"""Untrusted uploads: sniff the type, unpack safely, decode with size caps, map every problem to 4xx.

Everything a client sends is treated as hostile:

* the type is taken from the bytes (magic numbers), never from the file name or the declared type;
* zips are checked member by member before extraction (count, declared sizes, compression ratio,
  absolute paths, ``..``, links) and extracted with the bytes actually written counted, so a lying
  header cannot exhaust the disk; members are written under generated names (no client path is used);
* DICOM is checked by :mod:`covidscan.data.dicom` (header first, in process; pixels in a sandboxed
  process with a memory cap and a timeout when ``ServeConfig.decode_isolated``: a worker of the
  service's :class:`covidscan.data.dicom.DecoderPool`, or a one-shot child without one);
* PNG/JPEG dimensions are read from the header and checked before the image is decoded, and the
  pixels are decoded in the same memory-capped, timed sandbox as DICOM when
  ``ServeConfig.decode_isolated`` (:func:`covidscan.data.dicom.decode_untrusted_picture`); several
  images of one request (lesion crops) are one job (:func:`read_images_2d`);
* a CT upload is either one slice (one PNG/JPEG, or one single-frame CT DICOM: :func:`ct_upload_form`),
  read by :func:`read_ct_slice`, or a series (:func:`read_ct`);
* ``.npy`` volumes are read without pickles, their header checked before the data is read.

Errors are :class:`UploadError` with an HTTP status (413, 415, 422) and a short ``code``. Messages name
the problem and never contain a header value that could identify a patient; temporary paths are
replaced by ``upload`` (or ``upload[i]`` for the i-th file).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from covidscan.config import DicomLimits, ServeConfig
from covidscan.errors import DataError, DicomError

if TYPE_CHECKING:
    from covidscan.data.dicom.decoder import DecoderPool

log = logging.getLogger(__name__)

Kind = Literal["dicom", "png", "jpeg", "zip", "npy"]
_MB = 1024 * 1024


class UploadError(DataError):
    """A client's upload cannot be used. ``status`` is the HTTP status the service answers with."""

    def __init__(self, message: str, status: int = 422, code: str = "invalid_upload") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def sanitise(message: str, paths: dict[str, str]) -> str:
    """Replace temporary paths in a message by neutral names (``{path: name}``), longest first."""
    for path, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(path, name)
    return re.sub(r"\s+", " ", message).strip()


def sniff(path: Path) -> Kind | None:
    """The upload's type from its first bytes: dicom, png, jpeg, zip, npy, or None."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    # DICOM without the preamble (raw dataset): group 0x0002/0x0008 little-endian tag first
    if len(head) >= 8 and head[0:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] in (b"\x00\x00", b"\x01\x00", b"\x05\x00", b"\x16\x00"):
        return "dicom"
    return None


def dicom_error(err: DicomError, paths: dict[str, str]) -> UploadError:
    """A reader error as a 4xx: 413 for size caps, 415 for unsupported kinds, 422 for broken files."""
    from covidscan.data import dicom as D

    name = type(err).__name__
    if isinstance(err, (D.FileTooLargeError, D.ImageTooLargeError, D.DecodeResourceError)):
        status = 413
    elif isinstance(err, (D.NotDicomError, D.UnsupportedTransferSyntaxError, D.UnsupportedSOPClassError, D.WrongModalityError, D.ColourImageError)):
        status = 415
    else:
        status = 422
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", name.removesuffix("Error")).lower() or "dicom"
    return UploadError(sanitise(str(err), paths), status, f"dicom_{code}")


# ------------------------------------------------------------------------------------ decoding
@dataclass(frozen=True)
class Decoded2D:
    """A decoded 2D upload: ingest's array (float32, bright = dense) and where it came from."""

    pixels: np.ndarray
    source: Kind


@dataclass(frozen=True)
class DecodedVolume:
    """A decoded CT upload: int16 HU (z, y, x) ordered along the slice normal, and the slice spacing."""

    hu: np.ndarray
    spacing_z: float
    source: str


def _decode_dicom(path: Path, limits: DicomLimits, serve: ServeConfig, kind: Literal["image", "series"], paths: dict[str, str],
                  decoders: DecoderPool | None = None):  # fmt: skip
    from covidscan.data import dicom as D

    try:
        if kind == "image":
            D.read_header(path, limits)  # cheap strict checks before any sandboxed decode
        if serve.decode_isolated:
            return D.decode_untrusted(path, limits, max_memory_mb=serve.decode_memory_mb, timeout_s=serve.decode_timeout_s, kind=kind, pool=decoders)
        return D.read_image(path, limits) if kind == "image" else D.read_series(path, limits)
    except DicomError as err:
        raise dicom_error(err, paths) from None


def _check_image_header(path: Path, serve: ServeConfig, name: str) -> None:
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = serve.max_image_pixels
    try:
        with Image.open(path) as img:  # reads the header only
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UploadError(f"{name}: not a readable PNG/JPEG image ({type(err).__name__})", 422, "bad_image") from None
    except Image.DecompressionBombError:
        raise UploadError(f"{name}: image dimensions exceed serve.max_image_pixels = {serve.max_image_pixels}", 413, "image_too_large") from None
    if w * h > serve.max_image_pixels or w <= 0 or h <= 0:
        raise UploadError(f"{name}: {w} x {h} pixels exceed serve.max_image_pixels = {serve.max_image_pixels}", 413, "image_too_large")


def _picture_error(err: DataError, paths: dict[str, str]) -> UploadError:
    """A PNG/JPEG decode failure as a 4xx: 413 out of memory, 422 timeout or unreadable image."""
    from covidscan.data import dicom as D

    if isinstance(err, (D.DecodeResourceError, D.DecodeTimeoutError)):
        status, code = (413, "image_decode_resource") if isinstance(err, D.DecodeResourceError) else (422, "image_decode_timeout")
        return UploadError(sanitise(str(err), paths), status, code)
    return UploadError(sanitise(str(err), paths), 422, "bad_image")


def read_images_2d(files: list[Path], limits: DicomLimits, serve: ServeConfig, *, modalities: frozenset[str], names: list[str] | None = None,
                   decoders: DecoderPool | None = None) -> list[Decoded2D]:  # fmt: skip
    """Several DICOM, PNG or JPEG uploads as ingest's 2D arrays, decoded as one sandboxed job.

    Every file's type and header are checked here first (in process, cheap); the pixels of all of them
    are then decoded by one job on one worker of ``decoders`` (the lesion crops of one request), or
    one by one (a one-shot child each without a pool; in process when ``serve.decode_isolated`` is off).

    Args:
        files: the uploaded files (temporary files).
        limits: DICOM caps.
        serve: upload caps.
        modalities: accepted DICOM modalities (``{"CR", "DX"}`` for X-ray).
        names: how to name each upload in messages (default ``upload`` / ``upload[i]``).
        decoders: the service's pre-started sandboxed decoders (:class:`covidscan.data.dicom.DecoderPool`).

    Raises:
        UploadError: 413/415/422 naming the problem (the first failing file).
    """
    from covidscan.data import dicom as D
    from covidscan.data.sources.image_files import read_grey

    files = [Path(f) for f in files]
    names = names or (["upload"] if len(files) == 1 else [f"upload[{i}]" for i in range(len(files))])
    paths = {str(f): n for f, n in zip(files, names)}
    kinds: list[Kind] = []
    jobs = []
    limits_json = limits.model_dump_json()
    for f, name in zip(files, names):
        kind = sniff(f)
        if kind == "dicom":
            try:
                D.read_header(f, limits)  # cheap strict checks before any sandboxed decode
            except DicomError as err:
                raise dicom_error(err, paths) from None
            jobs.append(("image", f, limits_json))
        elif kind in ("png", "jpeg"):
            _check_image_header(f, serve, name)
            jobs.append(D.picture_job(f, serve.max_image_pixels))
        else:
            raise UploadError(f"{name}: expected a DICOM, PNG or JPEG file (the content is {kind or 'not a recognised format'})", 415, "unsupported_type")
        kinds.append(kind)

    def failed(err: DataError, index: int) -> UploadError:
        return dicom_error(err, paths) if kinds[index] == "dicom" and isinstance(err, DicomError) else _picture_error(err, paths)

    results: list = []
    if serve.decode_isolated and decoders is not None:
        try:
            results = decoders.decode_many(jobs, serve.decode_timeout_s)
        except DataError as err:
            raise failed(err, int(getattr(err, "job_index", 0))) from None
    else:
        for i, (job_kind, f, params) in enumerate(jobs):
            try:
                if job_kind == "image":
                    results.append(D.decode_untrusted(f, limits, max_memory_mb=serve.decode_memory_mb, timeout_s=serve.decode_timeout_s, kind="image")
                                   if serve.decode_isolated else D.read_image(f, limits))  # fmt: skip
                else:
                    results.append(D.decode_untrusted_picture(f, serve.max_image_pixels, max_memory_mb=serve.decode_memory_mb, timeout_s=serve.decode_timeout_s)
                                   if serve.decode_isolated else read_grey(f, serve.max_image_pixels))  # fmt: skip
            except DataError as err:
                raise failed(err, i) from None
    out = []
    for kind, name, result in zip(kinds, names, results):
        if kind == "dicom":
            if result.modality not in modalities:
                raise UploadError(f"{name}: DICOM Modality is {result.modality!r}; this endpoint takes {'/'.join(sorted(modalities))}", 415, "wrong_modality")
            out.append(Decoded2D(np.asarray(result.pixels, dtype=np.float32), "dicom"))
        else:
            out.append(Decoded2D(result, kind))
    return out


def read_image_2d(path: Path, limits: DicomLimits, serve: ServeConfig, *, modalities: frozenset[str], name: str = "upload",
                  decoders: DecoderPool | None = None) -> Decoded2D:  # fmt: skip
    """A DICOM, PNG or JPEG upload as ingest's 2D array (float32, bright = dense; HU for a CT DICOM).

    Args:
        path: the uploaded file (a temporary file).
        limits: DICOM caps.
        serve: upload caps.
        modalities: accepted DICOM modalities (``{"CR", "DX"}`` for X-ray).
        name: how to name the upload in messages.
        decoders: the service's pre-started sandboxed decoders; None: a one-shot child when
            ``serve.decode_isolated``.

    Raises:
        UploadError: 413/415/422 naming the problem.
    """
    return read_images_2d([Path(path)], limits, serve, modalities=modalities, names=[name], decoders=decoders)[0]


CtForm = Literal["slice", "series"]


def ct_upload_form(files: list[Path], limits: DicomLimits) -> CtForm:
    """Whether a CT upload is one slice (for the CT-slice model) or a series (for the stack and 3D models).

    One slice: exactly one file that is a PNG/JPEG, or a DICOM whose header says Modality CT and one
    frame. Anything else (several files, a zip, a multi-frame file, a .npy volume, a non-CT DICOM) is a
    series, read and checked by :func:`read_ct`. Only the header is read here.

    Raises:
        UploadError: a single DICOM whose header cannot be parsed (4xx, as :func:`read_ct` would answer).
    """
    from covidscan.data import dicom as D
    from covidscan.data.dicom.headers import _number

    if len(files) != 1:
        return "series"
    path = Path(files[0])
    kind = sniff(path)
    if kind in ("png", "jpeg"):
        return "slice"
    if kind != "dicom":
        return "series"
    try:
        ds = D.read_header(path, limits)
        frames = int(_number(ds, "NumberOfFrames", path, default=1) or 1)
    except DicomError as err:
        raise dicom_error(err, {str(path): "upload"}) from None
    return "slice" if str(ds.get("Modality", "")).upper() == "CT" and frames == 1 else "series"


def read_ct_slice(path: Path, limits: DicomLimits, serve: ServeConfig, decoders: DecoderPool | None = None) -> Decoded2D:
    """One CT slice: a PNG/JPEG (ingest's grey float32, as a ``ct_slice2d`` record) or a one-frame CT DICOM (HU, float32).

    ``source`` says which: ``png``/``jpeg`` pixels are the published image's grey values, ``dicom``
    pixels are Hounsfield units (see :func:`covidscan.preprocess.ct.slice_grey` for the step between).

    Raises:
        UploadError: 413/415/422 naming the problem (a DICOM of another modality: 415).
    """
    return read_image_2d(Path(path), limits, serve, modalities=frozenset({"CT"}), decoders=decoders)


def _safe_members(zf: zipfile.ZipFile, serve: ServeConfig, name: str) -> list[zipfile.ZipInfo]:
    members = [m for m in zf.infolist() if not m.is_dir()]
    if not members:
        raise UploadError(f"{name}: the zip holds no file", 422, "empty_zip")
    if len(members) > serve.max_files:
        raise UploadError(f"{name}: the zip holds {len(members)} files; serve.max_files = {serve.max_files}", 413, "too_many_files")
    total = 0
    for m in members:
        parts = Path(m.filename.replace("\\", "/")).parts
        if m.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise UploadError(f"{name}: zip member path leaves the archive (absolute or '..'); refused", 422, "zip_path_traversal")
        mode = m.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadError(f"{name}: the zip holds a symbolic link; refused", 422, "zip_link")
        if m.flag_bits & 0x1:
            raise UploadError(f"{name}: the zip is encrypted", 422, "zip_encrypted")
        total += m.file_size
        if m.file_size > 0 and m.file_size / max(m.compress_size, 1) > serve.max_zip_ratio:
            raise UploadError(f"{name}: a zip member expands more than serve.max_zip_ratio = {serve.max_zip_ratio:g} times (zip bomb?)", 413, "zip_bomb")
    if total > serve.max_unzipped_mb * _MB:
        raise UploadError(f"{name}: the zip expands to {total / _MB:.0f} MB; serve.max_unzipped_mb = {serve.max_unzipped_mb:g}", 413, "zip_too_large")
    return members


def extract_zip(path: Path, dest: Path, serve: ServeConfig, name: str = "upload") -> list[Path]:
    """Extract a zip's files flat into ``dest`` under generated names, counting the bytes written.

    Raises:
        UploadError: a bad archive, too many or too large members, a bomb, traversal or links.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise UploadError(f"{name}: not a readable zip ({err})", 422, "bad_zip") from None
    out: list[Path] = []
    budget = int(serve.max_unzipped_mb * _MB)
    with zf:
        for i, member in enumerate(_safe_members(zf, serve, name)):
            target = dest / f"{i:05d}.dcm"
            try:
                with zf.open(member) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        budget -= len(chunk)
                        if budget < 0 or dst.tell() + len(chunk) > member.file_size:
                            raise UploadError(f"{name}: a zip member inflates beyond its declared size (zip bomb?)", 413, "zip_bomb")
                        dst.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
                raise UploadError(f"{name}: a zip member cannot be read ({type(err).__name__})", 422, "bad_zip") from None
            out.append(target)
    return out


def _read_npy(path: Path, serve: ServeConfig, name: str) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = reader(fh)  # the header only; never a pickle
    except (ValueError, OSError, SyntaxError) as err:
        raise UploadError(f"{name}: not a readable .npy file ({type(err).__name__})", 422, "bad_npy") from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise UploadError(f"{name}: .npy dtype {dtype} is not a numeric HU volume", 415, "bad_npy_dtype")
    if len(shape) != 3 or min(shape) < 1:
        raise UploadError(f"{name}: .npy shape {shape} is not a volume (z, y, x)", 422, "bad_npy_shape")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > serve.max_npy_mb * _MB:
        raise UploadError(f"{name}: .npy volume of {nbytes / _MB:.0f} MB exceeds serve.max_npy_mb = {serve.max_npy_mb:g}", 413, "npy_too_large")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
        hu = np.array(arr, dtype=np.float32)
    except (ValueError, OSError) as err:
        raise UploadError(f"{name}: .npy data cannot be read ({type(err).__name__})", 422, "bad_npy") from None
    if not np.isfinite(hu).all():
        raise UploadError(f"{name}: .npy volume holds NaN or infinite values", 422, "bad_npy_values")
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put an uploaded file into the series folder: a hard link (no copy of the bytes) when on the same file system."""
    try:
        if src.is_symlink():
            raise OSError("not linking a symbolic link")
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def read_ct(files: list[Path], work: Path, limits: DicomLimits, serve: ServeConfig, spacing_mm: float | None = None,
            decoders: DecoderPool | None = None) -> DecodedVolume:  # fmt: skip
    """A CT upload as an HU volume: one zip of a series, several DICOM slices, one multi-frame DICOM, or one .npy.

    Args:
        files: the uploaded files (temporary files).
        work: an empty temporary folder for the series.
        limits: DICOM caps.
        serve: upload caps.
        spacing_mm: slice spacing for a .npy volume (DICOM series carry their own).
        decoders: the service's pre-started sandboxed decoders; None: a one-shot child when
            ``serve.decode_isolated``.

    Raises:
        UploadError: 413/415/422 naming the problem.
    """
    if not files:
        raise UploadError("no file uploaded", 422, "no_file")
    if len(files) > serve.max_files:
        raise UploadError(f"{len(files)} files uploaded; serve.max_files = {serve.max_files}", 413, "too_many_files")
    names = {str(f): ("upload" if len(files) == 1 else f"upload[{i}]") for i, f in enumerate(files)}
    kinds = [sniff(f) for f in files]
    series = work / "series"
    series.mkdir(parents=True, exist_ok=True)
    names[str(series)] = "series"
    if len(files) == 1 and kinds[0] == "npy":
        hu = _read_npy(files[0], serve, "upload")
        spacing = float(spacing_mm) if spacing_mm is not None and np.isfinite(spacing_mm) and spacing_mm > 0 else float("nan")
        return DecodedVolume(hu, spacing, "npy")
    if len(files) == 1 and kinds[0] == "zip":
        members = extract_zip(files[0], series, serve)
        for m in members:
            names[str(m)] = f"upload:{m.stem}"
        kind = "series"
    elif all(k == "dicom" for k in kinds):
        for i, f in enumerate(files):
            target = series / f"{i:05d}.dcm"
            _link_or_copy(Path(f), target)
            names[str(target)] = names[str(f)]
        kind = "series"
    else:
        bad = [names[str(f)] for f, k in zip(files, kinds) if k != "dicom"]
        raise UploadError(f"{', '.join(bad)}: expected DICOM slices, one zip of a series, or one .npy volume", 415, "unsupported_type")
    only = sorted(series.iterdir())
    target = only[0] if len(only) == 1 else series  # one multi-frame file
    volume = _decode_dicom(target, limits, serve, kind, names, decoders)
    return DecodedVolume(np.asarray(volume.hu), float(volume.spacing[0]), "dicom")
