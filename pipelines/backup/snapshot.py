"""Dump every table of the project to Parquet from one consistent snapshot of the database.

PostgreSQL: one ``REPEATABLE READ READ ONLY`` transaction whose first statement locks every
table ``ACCESS SHARE`` (as ``pg_dump`` does), so rows, partitions and the schema cannot change
under it while inserts and updates go on. The forecast sink's partition DDL (new day
partitions, a re-run replacing its leaves) waits for the dump to end: the dump holds the
sink's advisory lock, shared, for its duration, so the sink waits on that lock rather than
queueing an exclusive table lock that would also stall readers. SQLite: one read transaction
in WAL mode; writers are never blocked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, Table, inspect

import schemas.api_tables
import schemas.forecast_tables
import schemas.operations_tables
import schemas.registry_tables  # noqa: F401  (each import registers its tables on Base)
from pipelines.backup.manifest import FileEntry, TableEntry
from pipelines.backup.tables import TableDigest, arrow_schema, read_batches
from pipelines.db import current_revision, head_revision, mask_url, transaction, translate_errors
from pipelines.errors import ConfigError
from pipelines.forecast.postgres_sink import PARTITION_LOCK_KEY
from pipelines.models.artefacts import file_sha256
from schemas.forecast_tables import is_forecast_partition
from schemas.tables import Base

logger = logging.getLogger(__name__)

DB_FOLDER = "db"
_SKIPPED = {"alembic_version"}


@dataclass(frozen=True)
class DatabaseDump:
    """What :func:`dump_database` wrote."""

    revision: str
    tables: list[TableEntry]
    files: list[FileEntry]
    warnings: list[str]


def project_tables() -> list[Table]:
    """Every table of the schema at the newest revision, parents before children."""
    return list(Base.metadata.sorted_tables)


def _order_by(table: Table) -> tuple[list[str], list[str]]:
    key = [column.name for column in table.primary_key.columns]
    rest = [column.name for column in table.columns if column.name not in key]
    return key, key or rest  # without a key every column orders (identical rows tie)


@contextmanager
def snapshot(engine: Engine, tables: list[Table]) -> Iterator[Connection]:
    """A connection inside one read-only transaction that sees one state of the database."""
    if engine.dialect.name != "postgresql":
        with transaction(engine, write=False) as conn:
            yield conn
        return
    names = ", ".join(engine.dialect.identifier_preparer.quote(t.name) for t in tables)
    with translate_errors(engine, "take a snapshot for the backup"), engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql(f"SELECT pg_advisory_lock_shared({PARTITION_LOCK_KEY})")
        conn.commit()
        try:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                # LOCK before any SELECT: the snapshot is taken by the first query, after it.
                conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS SHARE MODE")
                yield conn
        finally:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock_shared({PARTITION_LOCK_KEY})")
            conn.commit()


def _unknown_tables(engine: Engine, tables: list[Table]) -> list[str]:
    known = {t.name for t in tables} | _SKIPPED
    with translate_errors(engine, "list the tables"):
        found = inspect(engine).get_table_names()
    return sorted(n for n in found if n not in known and not is_forecast_partition(n))


def dump_database(engine: Engine, directory: Path) -> DatabaseDump:
    """Write ``directory/db/<table>.parquet`` for every table, from one snapshot.

    Parameters
    ----------
    engine
        The database to back up; it must be at the newest schema revision.
    directory
        Local folder the dumps go to (the backup's layout below it).

    Returns
    -------
    DatabaseDump
        The revision, one entry per table (rows, digest, order) and per file (sha256, size).

    Raises
    ------
    ConfigError
        The database is not at the revision this code knows (never migrated, or older/newer).
    SinkError
        The database refused a read.
    """
    revision, head = current_revision(engine), head_revision()
    if revision is None or revision != head:
        raise ConfigError(
            f"database {mask_url(engine.url)} is at schema revision {revision or '(none)'}, "
            f"this code writes {head}: run any climate job (they migrate it), or back it up "
            "with the code version that migrated it"
        )
    tables = project_tables()
    warnings = [
        f"table {name} is not part of the schema and is not backed up"
        for name in _unknown_tables(engine, tables)
    ]
    (directory / DB_FOLDER).mkdir(parents=True, exist_ok=True)
    entries: list[TableEntry] = []
    files: list[FileEntry] = []
    with snapshot(engine, tables) as conn, translate_errors(engine, "read the tables"):
        for table in tables:
            schema = arrow_schema(table)
            key, order = _order_by(table)
            relative = f"{DB_FOLDER}/{table.name}.parquet"
            path = directory / relative
            digest = TableDigest(schema)
            with pq.ParquetWriter(path, schema, compression="zstd") as writer:
                for batch in read_batches(conn, table.name, schema, order):
                    writer.write_batch(batch)
                    digest.update(batch)
            entries.append(
                TableEntry(
                    name=table.name,
                    file=relative,
                    rows=digest.rows,
                    digest=digest.hexdigest(),
                    primary_key=key,
                    order_by=order,
                )
            )
            files.append(
                FileEntry(path=relative, sha256=file_sha256(path), size=path.stat().st_size)
            )
            logger.info("dumped %s: %d rows", table.name, digest.rows)
    return DatabaseDump(revision=revision, tables=entries, files=files, warnings=warnings)
