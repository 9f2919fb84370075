"""The forecasts-table sink contract and the factory choosing PostgreSQL or SQLite by URL."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sqlalchemy import make_url

from pipelines.errors import ConfigError
from pipelines.forecast.postgres_sink import (
    PostgresBatchWriter,
    PostgresForecastSink,
    PostgresTarget,
)
from pipelines.forecast.rows import RowContext
from pipelines.forecast.sqlite_sink import SqliteBatchWriter, SqliteForecastSink, SqliteTarget

SqlTarget = PostgresTarget | SqliteTarget


class BatchWriter(Protocol):
    """Worker side: replaces the rows of a batch's initial times (idempotent per batch)."""

    def write(
        self, init_seconds: np.ndarray, lead_hours: tuple[int, ...], forecasts: np.ndarray
    ) -> int: ...

    def close(self) -> None: ...


class ForecastSqlSink(Protocol):
    """Driver side: prepare before the workers start, then commit (all rows at once) or abort."""

    def prepare(self, init_seconds: np.ndarray) -> None: ...

    def commit(self) -> int: ...

    def abort(self) -> None: ...


def sql_target(url: str, run_id: str, attempt: str, rows_per_copy: int = 200_000) -> SqlTarget:
    """The target of a run in the database at ``url`` (SQLAlchemy URL)."""
    backend = make_url(url).get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return PostgresTarget(url, run_id, attempt, rows_per_copy)
    if backend == "sqlite":
        return SqliteTarget(url, run_id, attempt)
    raise ConfigError(f"forecasts can be written to PostgreSQL or SQLite, not {backend!r}")


def sql_sink(target: SqlTarget) -> ForecastSqlSink:
    """The driver-side sink of a target."""
    if isinstance(target, PostgresTarget):
        return PostgresForecastSink(target)
    return SqliteForecastSink(target)


def batch_writer(target: SqlTarget, context: RowContext) -> BatchWriter:
    """A worker-side writer of a target."""
    if isinstance(target, PostgresTarget):
        return PostgresBatchWriter(target, context)
    return SqliteBatchWriter(target, context)
