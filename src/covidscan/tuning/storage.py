"""Study storage: a local journal file by default, any SQLAlchemy URL (sqlite, PostgreSQL) for RDB.

Both kinds have heartbeats: a RUNNING trial whose worker died (killed process: at once on the same
host; otherwise no heartbeat for ``tune.grace_seconds``) is failed and retried once with the same
parameters (``RetryHeartbeatStaleTrialCallback``, ``tune.max_retry``). Optuna's RDB storage has this
built in; :class:`HeartbeatJournalStorage` adds it to the journal file storage.

:class:`ClaimLock` makes "is there budget left? then create a trial" atomic across workers (a file lock
next to a local storage, a PostgreSQL advisory lock), so N workers never overshoot the budget. On
PostgreSQL, workers that start together on an empty database create Optuna's tables one at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the documented extension point for heartbeats
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from covidscan.config import TuneConfig

HEARTBEAT_KEY = "covidscan.heartbeat"
HOST = socket.gethostname()


def is_url(storage: str) -> bool:
    """Whether ``storage`` is an RDB URL (``sqlite:///``, ``postgresql://``, ...) rather than a journal file path."""
    return "://" in storage


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - no such process (or no permission): treat as gone
        return None


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal file storage with heartbeats (a system attribute per beat: host, pid, trial number, time).

    Args:
        path: the journal file (created with its folder when missing).
        cfg: ``tune`` (heartbeat interval, grace period, retries).
    """

    def __init__(self, path: str | Path, cfg: TuneConfig) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        self._interval = int(cfg.heartbeat_seconds)
        self._grace = float(cfg.grace_seconds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._callback = RetryHeartbeatStaleTrialCallback(max_retry=cfg.max_retry)
        self._me = {"host": HOST, "pid": os.getpid(), "start": _process_start(os.getpid())}

    def record_heartbeat(self, trial_id: int) -> None:
        number = self.get_trial_number_from_id(trial_id)
        self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, {**self._me, "trial": number, "time": time.time()})

    def _is_stale(self, trial: FrozenTrial, now: float) -> bool:
        beat = trial.system_attrs.get(HEARTBEAT_KEY)
        if not isinstance(beat, dict) or beat.get("trial") != trial.number:  # none yet (or copied from a retried trial)
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            return now - started > self._grace
        if beat.get("host") == HOST:
            start = _process_start(int(beat["pid"]))
            if start is None or (beat.get("start") is not None and abs(start - float(beat["start"])) > 1.0):
                return True  # its process is gone (or the pid was reused)
        return now - float(beat["time"]) > self._grace

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if self._is_stale(t, now)]

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._callback


def is_postgres(storage: str) -> bool:
    """Whether ``storage`` is a PostgreSQL URL (``postgresql://``, ``postgresql+psycopg://``, ``postgres://``)."""
    return storage.startswith(("postgresql", "postgres"))


SCHEMA_LOCK_KEY = zlib.crc32(b"covidscan.optuna.schema") & 0x7FFFFFFF


@contextlib.contextmanager
def _schema_lock(storage: str) -> Iterator[None]:
    """On PostgreSQL, a session advisory lock around the creation of Optuna's tables: workers started at
    the same time on an empty database otherwise race on ``CREATE TYPE`` / ``CREATE TABLE`` and all but
    one fail. Elsewhere (sqlite, a journal file) nothing."""
    if not is_postgres(storage):
        yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(storage, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def open_storage(storage: str, cfg: TuneConfig) -> BaseStorage:
    """The storage for a journal file path or an RDB URL, with heartbeats and retries on."""
    if is_url(storage):
        with warnings.catch_warnings(), _schema_lock(storage):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are experimental in Optuna
            return RDBStorage(
                storage, heartbeat_interval=cfg.heartbeat_seconds, grace_period=cfg.grace_seconds,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=cfg.max_retry),
            )  # fmt: skip
    return HeartbeatJournalStorage(storage, cfg)


def rdb_storage(backend: BaseStorage) -> RDBStorage:
    """The :class:`RDBStorage` under a study's storage (``optuna.create_study`` wraps an RDB storage in a cache).

    Raises:
        TypeError: ``backend`` is not (a cache around) an RDB storage.
    """
    inner = getattr(backend, "_backend", backend)  # optuna.storages._CachedStorage keeps the RDB storage there
    if not isinstance(inner, RDBStorage):
        raise TypeError(f"expected an RDB storage (or Optuna's cache around one), got {type(backend).__name__}")
    return inner


class ClaimLock:
    """An inter-process lock around "check the budget, then create a trial" for one study.

    A journal file or a sqlite URL: ``fcntl.flock`` on ``<file>.<study>.claim`` (workers on one host).
    PostgreSQL: ``pg_advisory_lock`` on a key derived from the study name (workers on many hosts).
    Other URLs: no lock (a race may start one extra trial per extra worker; a warning says so).
    Releasing twice is harmless.
    """

    def __init__(self, storage: str, backend: BaseStorage, study_name: str) -> None:
        self._kind, self._held = "none", False
        self._file: Any = None
        self._conn: Any = None
        if not is_url(storage) or storage.startswith("sqlite:///"):
            path = Path(storage[len("sqlite:///") :] if is_url(storage) else storage)
            self._path = path.with_name(f"{path.name}.{study_name}.claim")
            self._kind = "file"
        elif is_postgres(storage):
            self._engine, self._key = rdb_storage(backend).engine, zlib.crc32(study_name.encode()) & 0x7FFFFFFF
            self._kind = "pg"
        else:
            optuna.logging.get_logger(__name__).warning("no claim lock for %s: a worker race may start extra trials", storage.split("://")[0])

    def acquire(self) -> None:
        if self._kind == "file":
            self._file = open(self._path, "a")  # noqa: SIM115 - held until release()
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self._kind == "pg":
            from sqlalchemy import text

            self._conn = self._engine.connect()
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._kind == "file":
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
        elif self._kind == "pg":
            from sqlalchemy import text

            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.close()
