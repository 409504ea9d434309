"""The annotation platform's SQL storage (SQLAlchemy 2): accounts, boxes, reads, submissions,
adjudications and the audit log.

SQLite file by default, PostgreSQL (or any SQLAlchemy URL) by ``--db``. The schema is created and
upgraded by Alembic (``covidscan/annotate/migrations``); :func:`open_store` runs ``upgrade head`` at
start, so a database made by an older version is migrated before the app serves a request.

Only pseudonymous record ids (``r-`` + 16 hex digits, from the ingest manifest) are stored: no
patient name, no original path, no header field.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ROLES = ("reader", "senior", "admin")
SLOTS = ("reader1", "reader2")  # the two independent readers of a case (annotations.parquet's readers)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    """An account. A ``reader`` annotates as ``slot`` (reader1 or reader2) and reads as ``reads_as``
    (one of the expert readers of reads.parquet, e.g. ``Rad-5th``)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    slot: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reads_as: Mapped[str | None] = mapped_column(String(32), nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # a session cookie is valid only with the account's current epoch: logging out moves it on, so a
    # copied cookie dies with the logout (revision 0002)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Box(Base):
    """A lesion box in the record's array pixels (x = column), on ``slice_index`` (0 for a 2D image).
    ``author_slot`` is reader1, reader2 or adjudicated."""

    __tablename__ = "boxes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), index=True)
    author_slot: Mapped[str] = mapped_column(String(16), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)  # None: the automatic rule
    slice_index: Mapped[int] = mapped_column(Integer, default=0)
    x0: Mapped[float] = mapped_column(Float)
    y0: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    from_suggestion: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Read(Base):
    """A binary COVID-19 read of a case by a slot (reader1, reader2, adjudicated)."""

    __tablename__ = "reads"
    __table_args__ = (UniqueConstraint("record_id", "author_slot"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), index=True)
    author_slot: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)  # None: the automatic rule
    read: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Submission(Base):
    """A reader's case is final once submitted (the reader can no longer change it)."""

    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("record_id", "slot"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), index=True)
    slot: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Adjudication(Base):
    """The outcome of a case once both readers submitted: ``agreed`` (adjudicated automatically by the
    rule in :mod:`covidscan.annotate.workflow`), ``queued`` (waits for a senior) or ``decided``."""

    __tablename__ = "adjudications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class AuditEntry(Base):
    """Every change: who (user id and name), what (action + JSON detail, record ids only), when."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(String, default="{}")


def audit(db: Session, user: User | None, action: str, record_id: str | None = None, username: str | None = None,
          **detail: Any) -> None:
    """Append an audit entry (committed with the change it describes)."""
    db.add(AuditEntry(user_id=user.id if user else None, username=username or (user.username if user else "-"),
                      action=action, record_id=record_id, detail=json.dumps(detail, sort_keys=True, default=str)))


def default_url(path: str | Path) -> str:
    """The SQLite URL of a database file."""
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def upgrade(url: str) -> None:
    """Create or migrate the schema to Alembic's head revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


def open_store(url: str) -> sessionmaker[Session]:
    """Migrate the database at ``url`` to head and return a session factory."""
    upgrade(url)
    engine: Engine = create_engine(url, future=True)
    return sessionmaker(engine, expire_on_commit=False)


def user_by_name(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == username))
