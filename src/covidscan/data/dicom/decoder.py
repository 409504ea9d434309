"""Decoding untrusted input in a child process (multiprocessing "spawn") with an address-space cap and a timeout."""

from __future__ import annotations

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
from covidscan.errors import DicomError


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


def _untrusted_worker(conn: Any, path: str, limits_json: str, kind: str, max_memory_mb: float) -> None:
    """Child process: cap the address space, decode, send the result (array bytes out of band)."""
    try:
        import resource

        for module in ("gdcm", "openjpeg", "jpeg_ls", "pylibjpeg"):  # map decoder libraries before the cap
            try:
                __import__(module)
            except Exception:  # noqa: BLE001
                pass
        cap = _address_space_bytes() + int(max_memory_mb * _MB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        limits = DicomLimits.model_validate_json(limits_json)
        result = _read_any(Path(path), limits, kind)
        array = result.pixels if isinstance(result, DicomImage) else result.hu
        array = np.ascontiguousarray(array)
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
    import multiprocessing as mp

    path = Path(path)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_untrusted_worker,
        args=(child, str(path), limits.model_dump_json(), kind, float(max_memory_mb)),
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
        if payload["type"] == "DicomImage":
            return DicomImage(pixels=array, **fields)
        return CTVolume(hu=array, **fields)
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
