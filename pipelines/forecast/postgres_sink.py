"""The ``forecasts`` sink on PostgreSQL: binary COPY into per-run leaf partitions, attached at once.

Layout: ``forecasts`` is partitioned by RANGE of ``init_time``, one partition per UTC day
(``forecasts_dYYYYMMDD``, created on demand), and each day by LIST of ``run_id``. A run writes
into fresh, detached tables ``fcs_<day>_<run hash>_<attempt>`` (one per day):

1. ``prepare`` (driver): create the day partitions it needs and the detached staging tables.
2. ``write`` (workers, per batch, one transaction): delete the batch's initial times from the
   staging table, then COPY its rows. A retried batch (a worker killed, a connection lost)
   replaces its own rows, so batches are idempotent.
3. ``commit`` (driver): index the staging tables and add a CHECK matching the partition bound
   (outside any lock), then in ONE transaction drop the run's previous leaves (a re-run) and
   attach the new ones. Readers see all of the run's rows or none, never a mix.
4. ``abort``: drop the staging tables; nothing was ever visible.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy import make_url

from pipelines.db import mask_url
from pipelines.errors import SinkError
from pipelines.forecast.rows import COPY_HEADER, COPY_TRAILER, CopyEncoder, RowContext
from schemas.forecast_tables import FORECAST_COLUMNS

log = logging.getLogger(__name__)

WRITER_APPLICATION = "climate-forecast-writer"
COMMIT_APPLICATION = "climate-forecast-commit"
PARTITION_LOCK_KEY = 0x666F726563617374  # "forecast": serialises partition DDL (and backups)
_DAY = 86_400
_ATTEMPTS = 4
_BACKOFF_S = 0.5


def conninfo(url: str) -> str:
    """A libpq URI for psycopg from a SQLAlchemy PostgreSQL URL."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def run_hash(run_id: str) -> str:
    """10 hex digits naming a run in table names (run ids may be long or contain dots)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:10]


def day_of(seconds: int) -> int:
    """The UTC day (epoch seconds of its midnight) of an epoch second."""
    return int(seconds) // _DAY * _DAY


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day, tz=UTC).strftime("%Y%m%d")


def day_partition(day: int) -> str:
    return f"forecasts_d{_day_label(day)}"


def staging_table(day: int, run_id: str, attempt: str) -> str:
    return f"fcs_{_day_label(day)}_{run_hash(run_id)}_{attempt}"


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=UTC)


def _retrying(action: str, url: str, fn: Callable[[], object]) -> object:
    """Run ``fn``; on a lost connection retry it (it must be idempotent), then SinkError."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return fn()
        except psycopg.OperationalError as exc:
            if attempt == _ATTEMPTS:
                raise SinkError(
                    f"database {mask_url(url)}: could not {action} after {_ATTEMPTS} attempts "
                    f"({' '.join(str(exc).split())[:200]}); is PostgreSQL up and reachable?"
                ) from exc
            log.warning("%s: connection lost (%s); retrying", action, exc)
            time.sleep(_BACKOFF_S * attempt)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class PostgresTarget:
    """Where one run's rows go; picklable, handed to every worker."""

    url: str
    run_id: str
    attempt: str
    rows_per_copy: int = 200_000

    def connect(self, application: str) -> psycopg.Connection:
        try:
            return psycopg.connect(
                conninfo(self.url), application_name=application, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise psycopg.OperationalError(str(exc)) from exc


class PostgresBatchWriter:
    """A worker's connection: writes whole batches into the run's staging tables."""

    def __init__(self, target: PostgresTarget, context: RowContext) -> None:
        self.target = target
        self.encoder = CopyEncoder(context)
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.target.connect(WRITER_APPLICATION)
        return self._conn

    def _write_once(
        self, init_seconds: np.ndarray, lead_hours: tuple[int, ...], forecasts: np.ndarray
    ) -> None:
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                days = np.asarray([day_of(s) for s in init_seconds])
                for day in np.unique(days):
                    table = sql.Identifier(
                        staging_table(int(day), self.target.run_id, self.target.attempt)
                    )
                    rows = days == day
                    inits = init_seconds[rows]
                    cur.execute(
                        sql.SQL("DELETE FROM {} WHERE init_time = ANY(%s)").format(table),
                        ([_utc(s) for s in inits],),
                    )
                    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                        table, sql.SQL(", ").join(map(sql.Identifier, FORECAST_COLUMNS))
                    )
                    with cur.copy(copy_sql) as copy:
                        copy.write(COPY_HEADER)
                        for chunk in self.encoder.chunks(
                            inits, lead_hours, forecasts[rows], self.target.rows_per_copy
                        ):
                            copy.write(chunk)
                        copy.write(COPY_TRAILER)
        except psycopg.OperationalError:
            self.close()
            raise

    def write(
        self, init_seconds: np.ndarray, lead_hours: tuple[int, ...], forecasts: np.ndarray
    ) -> int:
        """Replace the rows of these initial times with ``forecasts`` [B, lead, C, lat, lon]."""
        init_seconds = np.asarray(init_seconds, dtype=np.int64)
        _retrying(
            f"write forecast rows of run {self.target.run_id}",
            self.target.url,
            lambda: self._write_once(init_seconds, lead_hours, forecasts),
        )
        context = self.encoder.context
        return len(init_seconds) * len(lead_hours) * len(context.channels) * context.points

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class PostgresForecastSink:
    """Driver side of one run: prepare, commit or abort (see the module docstring)."""

    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self.days: list[int] = []

    def _execute(self, action: str, work: Callable[[psycopg.Connection], object]) -> object:
        def attempt() -> object:
            with self.target.connect(COMMIT_APPLICATION) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK_KEY,))
                return work(conn)

        try:
            return _retrying(action, self.target.url, attempt)
        except psycopg.Error as exc:
            raise SinkError(
                f"database {mask_url(self.target.url)}: could not {action}: "
                f"{' '.join(str(exc).split())[:300]}; is the schema migrated (climate db "
                "migrate) and the run id unique?"
            ) from exc

    def _run_tables(self, conn: psycopg.Connection) -> Iterator[tuple[str, bool]]:
        """(name, attached) of every staging or leaf table of this run, any attempt."""
        pattern = f"^fcs_[0-9]{{8}}_{run_hash(self.target.run_id)}_[0-9a-f]+$"
        rows = conn.execute(
            "SELECT relname, relispartition FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace "
            "AND relname ~ %s",
            (pattern,),
        ).fetchall()
        yield from ((str(name), bool(attached)) for name, attached in rows)

    def prepare(self, init_seconds: np.ndarray) -> None:
        """Create the day partitions and this attempt's staging tables; drop stale attempts."""
        self.days = sorted({day_of(s) for s in np.asarray(init_seconds, dtype=np.int64)})

        def work(conn: psycopg.Connection) -> None:
            for name, attached in list(self._run_tables(conn)):
                if not attached:  # left by an attempt that died before commit or abort
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            for day in self.days:
                start, end = _utc(day), _utc(day) + timedelta(days=1)
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF forecasts "
                        "FOR VALUES FROM ({}) TO ({}) PARTITION BY LIST (run_id)"
                    ).format(
                        sql.Identifier(day_partition(day)), sql.Literal(start), sql.Literal(end)
                    )
                )
                table = staging_table(day, self.target.run_id, self.target.attempt)
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE forecasts INCLUDING DEFAULTS)").format(
                        sql.Identifier(table)
                    )
                )

        self._execute(f"prepare the forecast tables of run {self.target.run_id}", work)

    def _index(self, conn: psycopg.Connection, day: int) -> int:
        table = sql.Identifier(staging_table(day, self.target.run_id, self.target.attempt))
        start, end = _utc(day), _utc(day) + timedelta(days=1)
        conn.execute(sql.SQL("CREATE INDEX ON {} (variable, lat, lon, valid_time)").format(table))
        conn.execute(sql.SQL("CREATE INDEX ON {} (variable, valid_time)").format(table))
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} ADD CHECK (init_time >= {} AND init_time < {} AND run_id = {})"
            ).format(table, sql.Literal(start), sql.Literal(end), sql.Literal(self.target.run_id))
        )
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        return int(count[0]) if count else 0

    def commit(self) -> int:
        """Make the run's rows visible at once, replacing its previous rows; returns the count."""
        rows = 0
        for day in self.days:
            # Index building is the long part; it runs on the still-invisible staging table.
            rows += int(
                self._plain(f"index the staging table of {_day_label(day)}", self._index, day)
            )

        def attach(conn: psycopg.Connection) -> None:
            mine = {staging_table(d, self.target.run_id, self.target.attempt) for d in self.days}
            for name, attached in list(self._run_tables(conn)):
                if attached and name not in mine:
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            for day in self.days:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                        sql.Identifier(day_partition(day)),
                        sql.Identifier(staging_table(day, self.target.run_id, self.target.attempt)),
                        sql.Literal(self.target.run_id),
                    )
                )

        self._execute(f"commit the forecast rows of run {self.target.run_id}", attach)
        return rows

    def _plain(self, action: str, work: Callable[[psycopg.Connection, int], int], day: int) -> int:
        def attempt() -> int:
            with self.target.connect(COMMIT_APPLICATION) as conn, conn.transaction():
                return work(conn, day)

        return int(_retrying(action, self.target.url, attempt))  # type: ignore[call-overload]

    def abort(self) -> None:
        """Drop this attempt's staging tables; the run's committed rows (if any) stay."""

        def work(conn: psycopg.Connection) -> None:
            for name, attached in list(self._run_tables(conn)):
                if not attached and name.endswith(f"_{self.target.attempt}"):
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))

        self._execute(f"drop the staging tables of run {self.target.run_id}", work)
