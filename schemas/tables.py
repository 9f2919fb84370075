"""SQLAlchemy models of the run ledger (``runs``) and the ingest ledger (``ingest_files``).

Every table of the project derives from :class:`Base`, whose metadata carries a naming
convention so constraints get stable names on SQLite and PostgreSQL alike (Alembic's batch
mode on SQLite needs them). Migrations live in ``schemas/migrations``; this module creates
nothing at import.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_KINDS: frozenset[str] = frozenset(
    {"ingest", "train", "evaluate", "forecast", "nightly", "watch"}
)
RUN_STATUSES: frozenset[str] = frozenset({"running", "succeeded", "failed", "partial"})
FILE_STATUSES: frozenset[str] = frozenset({"pending", "committed", "failed"})


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC and given back their ``UTC`` tzinfo when read. Naive datetimes are refused on write.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given to a UTC column; "
                "pass a timezone-aware datetime, e.g. datetime.now(UTC)"
            )
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type(*, nullable: bool = False) -> JSON:
    """JSON on SQLite, JSONB on PostgreSQL; a nullable column stores ``None`` as SQL NULL."""
    return JSON(none_as_null=nullable).with_variant(JSONB(none_as_null=nullable), "postgresql")


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def new_run_id() -> str:
    """A fresh run id: 32 lowercase hex digits of a uuid4."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base of every table of the project."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _status_check(statuses: frozenset[str]) -> CheckConstraint:
    allowed = ", ".join(f"'{s}'" for s in sorted(statuses))
    return CheckConstraint(f"status IN ({allowed})", name="status")


class Run(Base):
    """One job run (ingest, train, evaluate, forecast) and how it ended."""

    __tablename__ = "runs"
    __table_args__ = (
        _status_check(RUN_STATUSES),
        Index(None, "kind", "started_at"),
    )

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_run_id)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(json_type())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    summary: Mapped[dict[str, Any] | None] = mapped_column(json_type(nullable=True))
    error: Mapped[str | None] = mapped_column(Text)


class IngestFile(Base):
    """The ingest ledger: one source file (at one fingerprint) written into one store."""

    __tablename__ = "ingest_files"
    __table_args__ = (
        UniqueConstraint("store_url", "file_url", "fingerprint"),
        Index(None, "store_url", "status"),
        _status_check(FILE_STATUSES),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    store_url: Mapped[str] = mapped_column(String(1024))
    file_url: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(128))
    checksum: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    times: Mapped[list[int]] = mapped_column(json_type(), default=list)
    time_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    time_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    n_times: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.run_id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
