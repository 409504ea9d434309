"""Decoding untrusted input in a child process (multiprocessing "spawn") with an address-space cap and a timeout.

:func:`decode_untrusted` decodes DICOM (an image, a series folder, a multi-frame file);
:func:`decode_untrusted_picture` decodes a published image (PNG/JPEG) with the same child, cap and
timeout, so that a decoder bug or a decompression trick in an upload never reaches the serving worker.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from covidscan.config import DicomLimits
from covidscan.data.dicom.errors import DecodeError, DecodeResourceError, DecodeTimeoutError
from covidscan.data.dicom.files import read_header
from covidscan.data.dicom.headers import _MB, _number
from covidscan.data.dicom.image import read_image
from covidscan.data.dicom.results import CTVolume, DicomImage
from covidscan.data.dicom.series import read_series
from covidscan.errors import DataError, DicomError


# ------------------------------------------------------------------------------ untrusted decoding
def _address_space_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read_any(path: Path, limits: DicomLimits, kind: str) -> DicomImage | CTVolume:
    if kind == "series" or (kind == "auto" and path.is_dir()):
        return read_series(path, limits)
    if kind == "auto":
        ds = read_header(path, limits)
        frames = int(_number(ds, "NumberOfFrames", path, default=1) or 1)
        if str(ds.get("Modality", "")).upper() == "CT" and frames > 1:
            return read_series(path, limits)
    return read_image(path, limits)


def _read_picture(path: Path, max_pixels: int) -> np.ndarray:
    """ingest's reader; OpenCV's allocation failure (under the cap) as a MemoryError, its other errors as DataError."""
    import cv2

    from covidscan.data.sources.image_files import read_grey

    try:
        return read_grey(path, max_pixels)
    except cv2.error as err:
        if "Insufficient memory" in str(err) or "OutOfMemory" in str(err):
            raise MemoryError(str(err)) from None
        raise DataError(f"{path}: not a readable image (OpenCV: {str(err).strip().splitlines()[-1][:200]})") from None


def _untrusted_worker(conn: Any, path: str, limits_json: str, kind: str, max_memory_mb: float) -> None:
    """Child process: cap the address space, decode, send the result (array bytes out of band).

    ``kind`` "picture": ``limits_json`` is ``{"max_pixels": N}`` and the result a bare grey array.
    """
    try:
        import resource

        for module in ("gdcm", "openjpeg", "jpeg_ls", "pylibjpeg", "cv2"):  # map decoder libraries before the cap
            try:
                __import__(module)
            except Exception:  # noqa: BLE001
                pass
        cap = _address_space_bytes() + int(max_memory_mb * _MB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        if kind == "picture":
            result: Any = None
            array = np.ascontiguousarray(_read_picture(Path(path), int(json.loads(limits_json)["max_pixels"])))
            header = {"type": "ndarray", "shape": array.shape, "dtype": array.dtype.str, "fields": {}}
        else:
            result = _read_any(Path(path), DicomLimits.model_validate_json(limits_json), kind)
            array = np.ascontiguousarray(result.pixels if isinstance(result, DicomImage) else result.hu)
            header = {
                "type": type(result).__name__,
                "shape": array.shape,
                "dtype": array.dtype.str,
                "fields": {k: v for k, v in vars(result).items() if k not in ("pixels", "hu")},
            }
        conn.send(("ok", header))
        conn.send_bytes(memoryview(array).cast("B"))
    except DicomError as err:
        conn.send(("error", err))
    except DataError as err:  # read_grey's typed error (a DICOM reader raises DicomError only)
        conn.send(("error", err) if kind == "picture" else ("crash", f"{type(err).__name__}: {err}"))
    except MemoryError:
        conn.send(("memory", None))
    except BaseException as err:  # noqa: BLE001 - report anything else as a decode failure
        conn.send(("crash", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def decode_untrusted(
    path: str | Path,
    limits: DicomLimits,
    *,
    max_memory_mb: float,
    timeout_s: float,
    kind: Literal["auto", "image", "series"] = "auto",
) -> DicomImage | CTVolume:
    """Decode an untrusted file or series folder in a child process with a memory cap and a timeout.

    The child (multiprocessing "spawn") imports the decoders, then limits its address space
    (``RLIMIT_AS``) to its size at that point plus ``max_memory_mb``, reads the input with every check
    of :func:`read_image` / :func:`read_series`, and sends the array back.

    Args:
        path: a DICOM file or a series folder.
        limits: caps checked before decoding.
        max_memory_mb: address space the decode may add on top of the worker's baseline.
        timeout_s: wall-clock limit for the whole decode; the worker is killed after it.
        kind: "image" (read_image), "series" (read_series) or "auto" (folder or multi-frame CT ->
            series, else image).

    Returns:
        A DicomImage or CTVolume, as the in-process readers return.

    Raises:
        DicomError: the reader's typed error, DecodeTimeoutError or DecodeResourceError.
    """
    return _decode_in_child(Path(path), limits.model_dump_json(), kind, max_memory_mb, timeout_s)


def decode_untrusted_picture(path: str | Path, max_pixels: int, *, max_memory_mb: float, timeout_s: float) -> np.ndarray:
    """Decode an untrusted PNG/JPEG in a child process with a memory cap and a timeout.

    The same child as :func:`decode_untrusted` (spawned, ``RLIMIT_AS`` = baseline + ``max_memory_mb``)
    runs :func:`covidscan.data.sources.image_files.read_grey`, the reader ingest uses, so the array is
    ingest's: grey float32 (rows, cols) in the file's own value range.

    Args:
        path: the image file.
        max_pixels: width x height above which the image is refused (checked again after decoding).
        max_memory_mb: address space the decode may add on top of the worker's baseline.
        timeout_s: wall-clock limit; the worker is killed after it.

    Raises:
        DataError: an unreadable image or one over ``max_pixels`` (the reader's error).
        DecodeTimeoutError, DecodeResourceError, DecodeError: the decode ran out of time or memory, or crashed.
    """
    return _decode_in_child(Path(path), json.dumps({"max_pixels": int(max_pixels)}), "picture", max_memory_mb, timeout_s)


def _decode_in_child(path: Path, limits_json: str, kind: str, max_memory_mb: float, timeout_s: float) -> Any:
    """Run :func:`_untrusted_worker` in a spawned child; the typed result, or the child's error raised here."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_untrusted_worker,
        args=(child, str(path), limits_json, kind, float(max_memory_mb)),
        daemon=True,
    )
    deadline = time.monotonic() + timeout_s
    proc.start()
    child.close()
    try:
        if not parent.poll(max(0.0, deadline - time.monotonic())):
            if proc.is_alive():
                raise DecodeTimeoutError(f"{path}: decoding took longer than {timeout_s:g} s; stopped")
            raise DecodeResourceError(f"{path}: the decoding worker died (exit code {proc.exitcode})")
        try:
            status, payload = parent.recv()
        except EOFError:
            proc.join(1)
            raise DecodeResourceError(f"{path}: the decoding worker died (exit code {proc.exitcode})") from None
        if status == "error":
            if isinstance(payload, DecodeResourceError):
                raise DecodeResourceError(f"{payload} (worker limit max_memory_mb = {max_memory_mb:g})")
            raise payload
        if status == "memory":
            raise DecodeResourceError(f"{path}: decoding needs more than max_memory_mb = {max_memory_mb:g} MB")
        if status == "crash":
            raise DecodeError(f"{path}: decoding failed in the worker ({payload})")
        array = np.empty(payload["shape"], dtype=np.dtype(payload["dtype"]))
        if not parent.poll(max(0.0, deadline - time.monotonic())):
            raise DecodeTimeoutError(f"{path}: decoding took longer than {timeout_s:g} s; stopped")
        parent.recv_bytes_into(memoryview(array).cast("B"))
        fields = payload["fields"]
        if payload["type"] == "ndarray":
            return array
        if payload["type"] == "DicomImage":
            return DicomImage(pixels=array, **fields)
        return CTVolume(hu=array, **fields)
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
