"""The ``forecasts`` sink on SQLite: executemany into a staging table, moved over in one commit.

Workers write each batch in one transaction into ``forecasts_staging`` under the run's attempt
id (deleting the batch's initial times first, so a retried batch replaces its rows). The
driver's commit deletes the run's old rows and moves the staged rows into ``forecasts`` in one
``BEGIN IMMEDIATE`` transaction, so readers see all of a run or none of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import make_url

from pipelines.db import SQLITE_BUSY_TIMEOUT_S
from pipelines.errors import SinkError
from pipelines.forecast.rows import RowContext, sqlite_rows, sqlite_time
from schemas.forecast_tables import FORECAST_COLUMNS

_COLUMNS = ", ".join(FORECAST_COLUMNS)
_INSERT = (
    f"INSERT INTO forecasts_staging (attempt, {_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in range(len(FORECAST_COLUMNS) + 1))})"
)


@dataclass(frozen=True)
class SqliteTarget:
    """Where one run's rows go; picklable, handed to every worker."""

    url: str
    run_id: str
    attempt: str

    @property
    def path(self) -> str:
        database = make_url(self.url).database
        if not database or database == ":memory:":
            raise SinkError(
                f"{self.url}: forecasts need a SQLite file that every worker can open, not an "
                "in-memory database; set DATABASE_URL=sqlite:///path/to/file.db"
            )
        return str(Path(database))

    def connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise SinkError(f"{self.path}: cannot open the SQLite database ({exc})") from exc
        return conn


@dataclass(frozen=True)
class _Statement:
    sql: str
    params: Sequence[Any]
    many: bool = False


def _in_transaction(conn: sqlite3.Connection, action: str, statements: list[_Statement]) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                if statement.many:
                    conn.executemany(statement.sql, statement.params)
                else:
                    conn.execute(statement.sql, statement.params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise SinkError(f"SQLite: could not {action} ({exc}); is the schema migrated?") from exc


class SqliteBatchWriter:
    """A worker's connection: writes whole batches into the staging table."""

    def __init__(self, target: SqliteTarget, context: RowContext) -> None:
        self.target = target
        self.context = context
        self._conn: sqlite3.Connection | None = None

    def write(
        self, init_seconds: np.ndarray, lead_hours: tuple[int, ...], forecasts: np.ndarray
    ) -> int:
        """Replace the staged rows of these initial times with ``forecasts`` [B, lead, C, ...]."""
        if self._conn is None:
            self._conn = self.target.connect()
        inits = np.asarray(init_seconds, dtype=np.int64)
        rows = [
            row
            for b, init_s in enumerate(inits)
            for row in sqlite_rows(
                self.context, self.target.attempt, int(init_s), lead_hours, forecasts[b]
            )
        ]
        marks = ", ".join("?" for _ in inits)
        _in_transaction(
            self._conn,
            f"stage forecast rows of run {self.target.run_id}",
            [
                _Statement(
                    f"DELETE FROM forecasts_staging WHERE attempt = ? AND init_time IN ({marks})",
                    (self.target.attempt, *sqlite_time(inits)),
                ),
                _Statement(_INSERT, rows, many=True),
            ],
        )
        return len(rows)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SqliteForecastSink:
    """Driver side of one run: prepare, commit or abort."""

    def __init__(self, target: SqliteTarget) -> None:
        self.target = target

    def _run(self, action: str, statements: list[_Statement]) -> None:
        conn = self.target.connect()
        try:
            _in_transaction(conn, action, statements)
        finally:
            conn.close()

    def prepare(self, init_seconds: np.ndarray) -> None:
        """Forget staged rows that earlier, unfinished attempts of this run left behind."""
        self._run(
            f"clear the staging rows of run {self.target.run_id}",
            [_Statement("DELETE FROM forecasts_staging WHERE run_id = ?", (self.target.run_id,))],
        )

    def commit(self) -> int:
        """Replace the run's rows with the staged ones in one transaction; returns the count."""
        conn = self.target.connect()
        try:
            _in_transaction(
                conn,
                f"commit the forecast rows of run {self.target.run_id}",
                [
                    _Statement("DELETE FROM forecasts WHERE run_id = ?", (self.target.run_id,)),
                    _Statement(
                        f"INSERT INTO forecasts ({_COLUMNS}) SELECT {_COLUMNS} "
                        "FROM forecasts_staging WHERE attempt = ?",
                        (self.target.attempt,),
                    ),
                    _Statement(
                        "DELETE FROM forecasts_staging WHERE attempt = ?", (self.target.attempt,)
                    ),
                ],
            )
            row = conn.execute(
                "SELECT count(*) FROM forecasts WHERE run_id = ?", (self.target.run_id,)
            ).fetchone()
        finally:
            conn.close()
        return int(row[0])

    def abort(self) -> None:
        """Drop this attempt's staged rows; the run's committed rows (if any) stay."""
        self._run(
            f"drop the staging rows of run {self.target.run_id}",
            [_Statement("DELETE FROM forecasts_staging WHERE attempt = ?", (self.target.attempt,))],
        )
