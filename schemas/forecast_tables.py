"""The ``forecasts`` table: one row per forecast value, and the SQLite sink's staging table.

On PostgreSQL ``forecasts`` is partitioned by RANGE of ``init_time`` (one partition per UTC
day, ``forecasts_dYYYYMMDD``), each day partitioned by LIST of ``run_id`` (one leaf per run,
``fcs_<day>_<run hash>_<attempt>``); the sink creates and attaches them, so a run's rows appear
in one transaction (see ``pipelines.forecast.postgres_sink``). The parent's DDL lives in
migration ``0003_forecasts``; this module holds the columns for SQLAlchemy Core queries and the
SQLite schema. Partitions are not in the metadata: Alembic comparisons should skip tables named
``forecasts_d*`` and ``fcs_*`` (see ``is_forecast_partition``).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import REAL, Column, Double, Index, Integer, String, Table

from schemas.tables import Base, UTCDateTime

FORECAST_COLUMNS: tuple[str, ...] = (
    "run_id",
    "model_sha256",
    "init_time",
    "lead_hours",
    "valid_time",
    "variable",
    "level",
    "lat",
    "lon",
    "value",
)
_PARTITION = re.compile(r"^(forecasts_d[0-9]{8}|fcs_[0-9]{8}_[0-9a-f]+_[0-9a-f]+)$")


def is_forecast_partition(name: str | None) -> bool:
    """Whether a table is a day partition or run leaf of ``forecasts`` (made at run time)."""
    return bool(name and _PARTITION.match(name))


def _columns() -> list[Column[Any]]:
    return [
        Column("run_id", String(64), nullable=False),
        Column("model_sha256", String(64), nullable=False),
        Column("init_time", UTCDateTime(), nullable=False),
        Column("lead_hours", Integer, nullable=False),
        Column("valid_time", UTCDateTime(), nullable=False),
        Column("variable", String(32), nullable=False),
        Column("level", Integer, nullable=True),
        Column("lat", Double, nullable=False),
        Column("lon", Double, nullable=False),
        Column("value", REAL, nullable=True),
    ]


forecasts = Table(
    "forecasts",
    Base.metadata,
    *_columns(),
    Index(None, "variable", "lat", "lon", "valid_time"),  # a point's time series
    Index(None, "variable", "valid_time"),  # a field at one valid time
)

forecasts_staging = Table(
    "forecasts_staging",
    Base.metadata,
    Column("attempt", String(32), nullable=False),
    *_columns(),
    Index(None, "attempt", "init_time"),
)
