"""Atomic, resumable training checkpoints.

A checkpoint (``<dir>/epoch-0007.pt`` = epoch 7, 0-based, completed) holds the model, optimiser,
scheduler and GradScaler (when one is used) states, the epoch, the history so far, the sampler state
and every RNG state (python, numpy, torch CPU, CUDA when present). It is written to a temporary file in
the same folder, fsync'ed, then renamed over the final name with ``os.replace`` (atomic on POSIX) and
the folder is fsync'ed: a process killed at any moment leaves either the previous checkpoint or the
new one, never a torn file. :func:`latest_checkpoint` returns the newest that loads.

Everything is stored as tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_NAME = re.compile(r"^epoch-(\d+)\.pt$")


@functools.lru_cache(maxsize=4)
def code_digest(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """sha256 over the relative names and contents of every ``.py`` file under ``root`` (default: the
    installed ``covidscan`` package): the code version that checkpoints are keyed by."""
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def checkpoint_dir(base: Path, params: Any, *data_files: Path) -> Path:
    """``base/<digest>``: resumable checkpoints keyed by the effective params, the input tables and the
    package's code (:func:`code_digest`), so a rerun after a parameter, data or code change starts fresh
    instead of resuming stale (or refused) weights; a rerun of the same code on the same inputs (a killed
    run, a torchrun restart) resumes."""
    h = hashlib.sha256(params.model_dump_json().encode())
    h.update(code_digest().encode())
    for path in data_files:
        if path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return base / h.hexdigest()[:12]


def checkpoint_path(directory: str | Path, epoch: int) -> Path:
    """``<directory>/epoch-<epoch:04d>.pt``."""
    return Path(directory) / f"epoch-{epoch:04d}.pt"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, ``os.replace``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def rng_state() -> dict[str, Any]:
    """Every RNG state the training touches: python, numpy, torch CPU and (when present) CUDA."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    random.setstate(_as_tuples(state["python"]))
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a round trip may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(
    directory: str | Path,
    epoch: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any = None,
    sampler_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write the checkpoint of a completed epoch atomically and prune older ones.

    Args:
        directory: checkpoint folder.
        epoch: the completed epoch (0-based).
        model, optimizer, scheduler, scaler: their state_dicts are saved (scaler may be None).
        sampler_state: the epoch sampler's state.
        extra: further plain values (history, best weights, config fingerprint, ...).
        keep_last: how many newest checkpoints to keep (>= 1).
    """
    payload = {
        "format": 1,
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "sampler": sampler_state,
        "rng": rng_state(),
        "extra": extra or {},
    }
    path = atomic_save(payload, checkpoint_path(directory, epoch))
    for stale in Path(directory).glob(".epoch-*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    for old in list_checkpoints(directory)[:-max(1, keep_last)]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoint files (temp files excluded), oldest epoch first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def latest_checkpoint(directory: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads (and its content), or None when there is none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - a damaged file: fall back to the previous one
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, err)
    return None
