"""Decoding untrusted input in a separate process (multiprocessing "spawn") with an address-space cap and a timeout.

:func:`decode_untrusted` decodes DICOM (an image, a series folder, a multi-frame file);
:func:`decode_untrusted_picture` decodes a published image (PNG/JPEG) with the same sandbox, cap and
timeout, so that a decoder bug or a decompression trick in an upload never reaches the serving worker.

Without a pool each call spawns one child (start-up and decoder imports: about a second). A
:class:`DecoderPool` keeps pre-started sandboxed workers instead: each imports the decoders once, caps
its own address space (``RLIMIT_AS``) once, and then takes jobs; a worker that crashes, runs out of
memory, times out or has done ``max_jobs`` jobs is replaced by a fresh one. Both functions take
``pool=`` to run on one; :meth:`DecoderPool.decode_many` runs several files as one job (the lesion
crops of one request).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import signal
import threading
import time
import weakref
from dataclasses import dataclass
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

log = logging.getLogger(__name__)

JobKind = Literal["auto", "image", "series", "picture"]


# ------------------------------------------------------------------------------ in the sandbox
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


def _enter_sandbox(max_memory_mb: float) -> None:
    """Import the decoders (their libraries must be mapped before the cap), then cap the address space."""
    import resource

    for module in ("gdcm", "openjpeg", "jpeg_ls", "pylibjpeg", "cv2", "covidscan.data.sources.image_files"):
        try:
            __import__(module)
        except Exception:  # noqa: BLE001 - an optional decoder that is not installed
            pass
    cap = _address_space_bytes() + int(max_memory_mb * _MB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _decode_job(conn: Any, kind: str, path: str, params_json: str) -> str:
    """Decode one input and send the reply (``(status, payload)``, then the array's bytes when "ok").

    ``kind`` "picture": ``params_json`` is ``{"max_pixels": N}`` and the result a bare grey array;
    otherwise ``params_json`` is the DicomLimits and ``kind`` what :func:`_read_any` takes.
    Returns the status sent: "ok", "error" (the reader's typed error), "memory" or "crash".
    """
    try:
        if kind == "picture":
            array = np.ascontiguousarray(_read_picture(Path(path), int(json.loads(params_json)["max_pixels"])))
            header = {"type": "ndarray", "shape": array.shape, "dtype": array.dtype.str, "fields": {}}
        else:
            result = _read_any(Path(path), DicomLimits.model_validate_json(params_json), kind)
            array = np.ascontiguousarray(result.pixels if isinstance(result, DicomImage) else result.hu)
            header = {
                "type": type(result).__name__,
                "shape": array.shape,
                "dtype": array.dtype.str,
                "fields": {k: v for k, v in vars(result).items() if k not in ("pixels", "hu")},
            }
    except DicomError as err:
        conn.send(("error", err))
        return "error"
    except DataError as err:  # read_grey's typed error (a DICOM reader raises DicomError only)
        if kind == "picture":
            conn.send(("error", err))
            return "error"
        conn.send(("crash", f"{type(err).__name__}: {err}"))
        return "crash"
    except MemoryError:
        conn.send(("memory", None))
        return "memory"
    except Exception as err:  # noqa: BLE001 - report anything else as a decode failure
        conn.send(("crash", f"{type(err).__name__}: {err}"))
        return "crash"
    conn.send(("ok", header))
    conn.send_bytes(memoryview(array).cast("B"))
    return "ok"


def _untrusted_worker(conn: Any, path: str, limits_json: str, kind: str, max_memory_mb: float) -> None:
    """A one-shot child: cap the address space, decode one input, send the result, exit."""
    try:
        _enter_sandbox(max_memory_mb)
        _decode_job(conn, kind, path, limits_json)
    except MemoryError:
        conn.send(("memory", None))
    except BaseException as err:  # noqa: BLE001
        conn.send(("crash", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def _pool_worker(conn: Any, max_memory_mb: float) -> None:
    """A pool worker: enter the sandbox once, say "ready", then decode jobs until told to stop or the parent goes.

    A job is a list of ``(kind, path, params_json)``; the worker answers each in order and stops at the
    first that is not "ok" (the parent raises it). After a memory error or a crash it exits (the pool
    replaces it): a half-failed allocation or decoder leaves no state behind for the next upload.
    """
    try:
        _enter_sandbox(max_memory_mb)
        conn.send(("ready", os.getpid()))
    except BaseException as err:  # noqa: BLE001
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        conn.close()
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent is gone: no orphan
            break
        if job is None:
            break
        status = "ok"
        try:
            for kind, path, params_json in job:
                status = _decode_job(conn, kind, path, params_json)
                if status != "ok":
                    break
        except (EOFError, OSError, BrokenPipeError):
            break
        except MemoryError:
            status = "memory"
            try:
                conn.send(("memory", None))
            except BaseException:  # noqa: BLE001
                pass
        if status in ("memory", "crash"):
            break
    conn.close()


# ------------------------------------------------------------------------------------ the parent
def _label(paths: list[str]) -> str:
    return paths[0] if len(paths) == 1 else f"{paths[0]} (one job of {len(paths)} files: {', '.join(paths[1:])})"


def _receive(conn: Any, path: str, deadline: float, timeout_s: float, max_memory_mb: float, alive) -> tuple[str, Any]:
    """One reply: ``("ok", array or DicomImage/CTVolume)`` or ``("error", exception to raise)``; raises on timeout/death."""
    if not conn.poll(max(0.0, deadline - time.monotonic())):
        if alive():
            raise DecodeTimeoutError(f"{path}: decoding took longer than {timeout_s:g} s; stopped")
        raise DecodeResourceError(f"{path}: the decoding worker died")
    try:
        status, payload = conn.recv()
    except (EOFError, OSError):
        raise DecodeResourceError(f"{path}: the decoding worker died (out of memory or crashed)") from None
    if status == "error":
        if isinstance(payload, DecodeResourceError):
            return "error", DecodeResourceError(f"{payload} (worker limit max_memory_mb = {max_memory_mb:g})")
        return "error", payload
    if status == "memory":
        return "fatal", DecodeResourceError(f"{path}: decoding needs more than max_memory_mb = {max_memory_mb:g} MB")
    if status == "crash":
        return "fatal", DecodeError(f"{path}: decoding failed in the worker ({payload})")
    array = np.empty(payload["shape"], dtype=np.dtype(payload["dtype"]))
    if not conn.poll(max(0.0, deadline - time.monotonic())):
        raise DecodeTimeoutError(f"{path}: decoding took longer than {timeout_s:g} s; stopped")
    try:
        conn.recv_bytes_into(memoryview(array).cast("B"))
    except (EOFError, OSError):
        raise DecodeResourceError(f"{path}: the decoding worker died (out of memory or crashed)") from None
    fields = payload["fields"]
    if payload["type"] == "ndarray":
        return "ok", array
    if payload["type"] == "DicomImage":
        return "ok", DicomImage(pixels=array, **fields)
    return "ok", CTVolume(hu=array, **fields)


@dataclass
class _Worker:
    process: Any
    conn: Any
    jobs: int = 0

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def stop(self, wait_s: float = 2.0) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(wait_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class _PoolState:
    """What the pool's threads and its finaliser share (never the pool itself, so it can be collected)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: queue.Queue[_Worker] = queue.Queue()
        self.workers: dict[int, _Worker] = {}  # pid -> worker (started, ready or busy)
        self.closed = False
        self.starting = 0

    def shutdown(self) -> None:
        with self.lock:
            self.closed = True
            workers = list(self.workers.values())
            self.workers.clear()
        for w in workers:
            w.stop()


_LIVE_POOLS: weakref.WeakSet[DecoderPool] = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


class DecoderPool:
    """Pre-started sandboxed decoding workers (spawned processes, decoders imported once, address space capped).

    Each worker runs :func:`_pool_worker`: it imports the decoders, sets ``RLIMIT_AS`` to its size at
    that point plus ``max_memory_mb`` (as the one-shot child does), and takes jobs over a pipe. A job
    has ``timeout_s`` of wall clock in the worker; past it the worker is killed. A worker that crashes,
    dies, runs out of memory, times out or has done ``max_jobs`` jobs is retired and a fresh one is
    started in the background, so the pool keeps ``size`` workers while uploads kill them.

    Workers start in the background when the pool is made; the first job waits for one to be ready.
    :meth:`close` (also at interpreter exit, and when the pool is garbage-collected) stops them all; a
    worker whose parent dies sees its pipe close and exits.

    Args:
        size: number of workers (``serve.decode_workers``).
        max_memory_mb: the address space a decode may add on top of a worker's baseline (``serve.decode_memory_mb``).
        max_jobs: jobs per worker before it is replaced (``serve.decode_max_jobs``).
        start_timeout_s: how long a worker may take to start before it is replaced.
    """

    def __init__(self, size: int, *, max_memory_mb: float, max_jobs: int = 500, start_timeout_s: float = 120.0) -> None:
        import multiprocessing as mp

        if size < 1 or max_jobs < 1:
            raise ValueError(f"DecoderPool: size ({size}) and max_jobs ({max_jobs}) must be >= 1")
        self.size = int(size)
        self.max_memory_mb = float(max_memory_mb)
        self.max_jobs = int(max_jobs)
        self.start_timeout_s = float(start_timeout_s)
        self._ctx = mp.get_context("spawn")
        self._state = _PoolState()
        self._finalizer = weakref.finalize(self, self._state.shutdown)
        _LIVE_POOLS.add(self)
        for _ in range(self.size):
            self._launch()

    # ---------------------------------------------------------------- workers
    def _launch(self) -> None:
        """Start one worker in the background; it joins the idle queue when it says ready."""
        state = self._state
        with state.lock:
            if state.closed:
                return
            state.starting += 1
        threading.Thread(target=self._start_one, name="covidscan-decoder-start", daemon=True).start()

    def _start_one(self) -> None:
        state = self._state
        try:
            for attempt in range(5):
                with state.lock:
                    if state.closed:
                        return
                parent, child = self._ctx.Pipe(duplex=True)
                proc = self._ctx.Process(target=_pool_worker, args=(child, self.max_memory_mb), name="covidscan-decoder", daemon=True)
                proc.start()
                child.close()
                worker = _Worker(proc, parent)
                with state.lock:
                    if state.closed:
                        worker.stop(0.5)
                        return
                    state.workers[worker.pid] = worker
                ready = False
                try:
                    ready = parent.poll(self.start_timeout_s) and parent.recv()[0] == "ready"
                except (EOFError, OSError):
                    ready = False
                if ready:
                    state.idle.put(worker)
                    return
                self._forget(worker)
                log.warning("a decoding worker failed to start (attempt %d); retrying", attempt + 1)
                time.sleep(min(5.0, 0.5 * 2**attempt))
            log.error("a decoding worker failed to start 5 times; the next job tries again")
        finally:
            with state.lock:
                state.starting -= 1

    def _forget(self, worker: _Worker) -> None:
        with self._state.lock:
            self._state.workers.pop(worker.pid, None)
        worker.stop(0.5)

    def _retire(self, worker: _Worker) -> None:
        """Stop a worker (in the background) and start its replacement."""
        with self._state.lock:
            self._state.workers.pop(worker.pid, None)
        threading.Thread(target=worker.stop, name="covidscan-decoder-stop", daemon=True).start()
        self._launch()

    def _top_up(self) -> None:
        """Start workers until ``size`` are running or starting (after start failures gave up)."""
        state = self._state
        with state.lock:
            missing = 0 if state.closed else self.size - len(state.workers) - state.starting
        for _ in range(max(0, missing)):
            self._launch()

    def _acquire(self, deadline: float, label: str, timeout_s: float) -> _Worker:
        while True:
            if self._state.closed:
                raise DecodeError(f"{label}: the decoding pool is closed")
            if self._state.idle.empty():
                self._top_up()
            try:
                worker = self._state.idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DecodeTimeoutError(f"{label}: no decoding worker became free within {timeout_s:g} s") from None
            if worker.process.is_alive():
                return worker
            self._retire(worker)  # died while idle (killed from outside): replace it, take the next

    # ------------------------------------------------------------------- jobs
    def pids(self) -> list[int]:
        """Process ids of the current workers (starting, idle or busy)."""
        with self._state.lock:
            return sorted(self._state.workers)

    def decode_many(self, jobs: list[tuple[JobKind, str | Path, str]], timeout_s: float) -> list[Any]:
        """Run several decodes as one job on one worker; their results in order, or the first failure raised.

        Args:
            jobs: ``(kind, path, params_json)``: kind "image", "series" or "auto" with
                ``DicomLimits.model_dump_json()``, or "picture" with ``{"max_pixels": N}``.
            timeout_s: wall-clock limit for the whole job (waiting for a free worker included).

        Raises:
            DicomError / DataError: the first input's typed reader error. Every error raised here
                carries ``job_index``: the position in ``jobs`` of the input it concerns (the one in
                the worker when it timed out or died).
            DecodeTimeoutError, DecodeResourceError, DecodeError: out of time, out of memory / worker
                died, or the decoder crashed.
        """
        if not jobs:
            return []
        paths = [str(p) for _, p, _ in jobs]
        label = _label(paths)
        deadline = time.monotonic() + timeout_s
        worker = self._acquire(deadline, label, timeout_s)
        try:
            return self._run(worker, jobs, paths, label, deadline, timeout_s)
        except DecodeResourceError:
            # a worker SIGKILLed from outside (an operator, a supervisor) between its liveness check and the job is
            # not the upload's doing: once, on a fresh worker. Its own memory cap ends a job with "memory", a crash
            # with another signal; those stay the upload's answer.
            worker.process.join(1.0)
            if worker.process.exitcode != -signal.SIGKILL:
                raise
            log.warning("%s: the decoding worker was killed from outside; retrying on another", label)
            return self._run(self._acquire(deadline, label, timeout_s), jobs, paths, label, deadline, timeout_s)

    def _run(self, worker: _Worker, jobs: list[tuple[JobKind, str | Path, str]], paths: list[str], label: str, deadline: float,
             timeout_s: float) -> list[Any]:  # fmt: skip
        """One attempt of :meth:`decode_many` on ``worker`` (given back to the pool or retired at the end)."""
        keep = False
        try:
            try:
                worker.conn.send([(kind, str(p), params) for kind, p, params in jobs])
            except (OSError, ValueError):
                raise DecodeResourceError(f"{label}: the decoding worker died") from None
            worker.jobs += 1
            out = []
            for index, path in enumerate(paths):
                try:
                    status, value = _receive(worker.conn, path, deadline, timeout_s, self.max_memory_mb, worker.process.is_alive)
                except Exception as err:  # timeout or death while this input was being decoded
                    err.job_index = index  # type: ignore[attr-defined]
                    raise
                if status == "ok":
                    out.append(value)
                    continue
                keep = status == "error"  # a typed reader error leaves the worker clean; memory/crash do not
                value.job_index = index
                raise value
            keep = True
            return out
        finally:
            if keep and worker.jobs < self.max_jobs and not self._state.closed:
                self._state.idle.put(worker)
            else:
                self._retire(worker)

    def close(self) -> None:
        """Stop every worker (waiting briefly for each, then killing it); later jobs raise DecodeError."""
        self._finalizer()
        _LIVE_POOLS.discard(self)

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------- the API
def decode_untrusted(
    path: str | Path,
    limits: DicomLimits,
    *,
    max_memory_mb: float,
    timeout_s: float,
    kind: Literal["auto", "image", "series"] = "auto",
    pool: DecoderPool | None = None,
) -> DicomImage | CTVolume:
    """Decode an untrusted file or series folder in a sandboxed process with a memory cap and a timeout.

    Without ``pool`` a child (multiprocessing "spawn") imports the decoders, then limits its address
    space (``RLIMIT_AS``) to its size at that point plus ``max_memory_mb``, reads the input with every
    check of :func:`read_image` / :func:`read_series`, and sends the array back. With ``pool`` one of
    its pre-started workers (same cap, the pool's ``max_memory_mb``) does it.

    Args:
        path: a DICOM file or a series folder.
        limits: caps checked before decoding.
        max_memory_mb: address space the decode may add on top of the worker's baseline (the pool's own with ``pool``).
        timeout_s: wall-clock limit for the whole decode; the worker is killed after it.
        kind: "image" (read_image), "series" (read_series) or "auto" (folder or multi-frame CT ->
            series, else image).
        pool: pre-started workers to run on (:class:`DecoderPool`); None: one child for this call.

    Returns:
        A DicomImage or CTVolume, as the in-process readers return.

    Raises:
        DicomError: the reader's typed error, DecodeTimeoutError or DecodeResourceError.
    """
    if pool is not None:
        return pool.decode_many([(kind, Path(path), limits.model_dump_json())], timeout_s)[0]
    return _decode_in_child(Path(path), limits.model_dump_json(), kind, max_memory_mb, timeout_s)


def picture_job(path: str | Path, max_pixels: int) -> tuple[JobKind, str, str]:
    """The pool job that decodes a PNG/JPEG as :func:`decode_untrusted_picture` does."""
    return "picture", str(path), json.dumps({"max_pixels": int(max_pixels)})


def decode_untrusted_picture(path: str | Path, max_pixels: int, *, max_memory_mb: float, timeout_s: float,
                             pool: DecoderPool | None = None) -> np.ndarray:  # fmt: skip
    """Decode an untrusted PNG/JPEG in a sandboxed process with a memory cap and a timeout.

    The same sandbox as :func:`decode_untrusted` (``RLIMIT_AS`` = baseline + ``max_memory_mb``; a
    one-shot child, or a worker of ``pool``) runs :func:`covidscan.data.sources.image_files.read_grey`,
    the reader ingest uses, so the array is ingest's: grey float32 (rows, cols) in the file's own value range.

    Args:
        path: the image file.
        max_pixels: width x height above which the image is refused (checked again after decoding).
        max_memory_mb: address space the decode may add on top of the worker's baseline.
        timeout_s: wall-clock limit; the worker is killed after it.
        pool: pre-started workers to run on; None: one child for this call.

    Raises:
        DataError: an unreadable image or one over ``max_pixels`` (the reader's error).
        DecodeTimeoutError, DecodeResourceError, DecodeError: the decode ran out of time or memory, or crashed.
    """
    kind, p, params = picture_job(path, max_pixels)
    if pool is not None:
        return pool.decode_many([(kind, p, params)], timeout_s)[0]
    return _decode_in_child(Path(path), params, kind, max_memory_mb, timeout_s)


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
        status, value = _receive(parent, str(path), deadline, timeout_s, max_memory_mb, proc.is_alive)
        if status != "ok":
            raise value
        return value
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
