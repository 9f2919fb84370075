"""Load a backup's table dumps into a database in one transaction: all of it or nothing.

Inside that transaction: the target's schema is dropped (Alembic downgrade to base) and
rebuilt at the backup's revision, every table is loaded (COPY on PostgreSQL, with the
forecasts' day partitions and one leaf per run made as the forecast sink makes them; batched
inserts on SQLite), PostgreSQL sequences are moved past the restored ids, and every table is
read back and compared with the manifest's row count and content digest. Only then does it
commit; the schema is then migrated to the newest revision.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from alembic import command
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from psycopg import sql
from sqlalchemy import Connection, Engine, inspect, text, update

from pipelines.backup.errors import BackupRefusedError
from pipelines.backup.manifest import Manifest, TableEntry
from pipelines.backup.tables import TableDigest, read_batches, sql_table
from pipelines.db import alembic_config, current_revision, mask_url, transaction
from pipelines.errors import ConfigError, SinkError
from pipelines.forecast.postgres_sink import day_partition, staging_table
from schemas.forecast_tables import is_forecast_partition

logger = logging.getLogger(__name__)

_BATCH_ROWS = 50_000
_DAY_US = 86_400 * 1_000_000
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S"  # with microseconds: SQLAlchemy's DateTime text on SQLite


def check_revision(engine: Engine, manifest: Manifest) -> str | None:
    """The target's current revision, after checking this code knows both revisions.

    Raises
    ------
    ConfigError
        The backup or the target was made by a newer schema than this code has.
    """
    scripts = ScriptDirectory.from_config(alembic_config())
    current = current_revision(engine)
    for revision, what in ((manifest.database.revision, "the backup"), (current, "the target")):
        if revision is None:
            continue
        try:
            scripts.get_revision(revision)
        except CommandError as exc:
            raise ConfigError(
                f"{what} is at schema revision {revision}, which this code does not know "
                f"(newest known: {scripts.get_current_head()}); restore with the climate "
                "version that wrote it"
            ) from exc
    return current


def occupied_tables(engine: Engine, names: list[str]) -> dict[str, int]:
    """Row counts of the tables among ``names`` that exist in the target and hold rows."""
    with transaction(engine, write=False) as conn:
        present = set(inspect(conn).get_table_names())
        counts = {
            name: int(conn.execute(text(f"SELECT count(*) FROM {_quote(conn, name)}")).scalar_one())
            for name in names
            if name in present
        }
    return {name: rows for name, rows in counts.items() if rows}


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)


def _python_columns(batch: pa.RecordBatch) -> list[list[object]]:
    columns: list[list[object]] = []
    for field, array in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            columns.append(pc.strftime(array, format=_SQLITE_TIME).to_pylist())
        else:
            columns.append(array.to_pylist())
    return columns


def _load_sqlite(conn: Connection, entry: TableEntry, path: Path) -> None:
    schema = pq.read_schema(path)
    names = ", ".join(_quote(conn, f.name) for f in schema)
    marks = ", ".join("?" for _ in schema)
    statement = f"INSERT INTO {_quote(conn, entry.name)} ({names}) VALUES ({marks})"
    for batch in _batches(path):
        rows = list(zip(*_python_columns(batch), strict=True))
        if rows:
            conn.exec_driver_sql(statement, rows)


def _forecast_partitions(conn: Connection, path: Path) -> None:
    """Day partitions and one leaf per (day, run) for the rows about to be copied in."""
    keys = pq.read_table(path, columns=["run_id", "init_time"])
    if keys.num_rows == 0:
        return
    micros = keys["init_time"].cast(pa.int64())
    days = pc.multiply(pc.floor(pc.divide(micros.cast(pa.float64()), _DAY_US)), 86_400)
    pairs = (
        pa.table({"day": days.cast(pa.int64()), "run_id": keys["run_id"]})
        .group_by(["day", "run_id"])
        .aggregate([])
    )
    attempt = uuid.uuid4().hex[:8]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    for day in sorted(set(pairs["day"].to_pylist())):
        start = datetime.fromtimestamp(day, tz=UTC)
        cursor.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF forecasts "
                "FOR VALUES FROM ({}) TO ({}) PARTITION BY LIST (run_id)"
            ).format(
                sql.Identifier(day_partition(day)),
                sql.Literal(start),
                sql.Literal(start + timedelta(days=1)),
            )
        )
    for day, run_id in zip(pairs["day"].to_pylist(), pairs["run_id"].to_pylist(), strict=True):
        cursor.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(
                sql.Identifier(staging_table(day, run_id, attempt)),
                sql.Identifier(day_partition(day)),
                sql.Literal(run_id),
            )
        )


def _load_postgres(conn: Connection, entry: TableEntry, path: Path) -> None:
    if entry.name == "forecasts":
        _forecast_partitions(conn, path)
    schema = pq.read_schema(path)
    # CSV written by Arrow: every value quoted, NULL unquoted and empty (PostgreSQL's CSV rule)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(entry.name), sql.SQL(", ").join(sql.Identifier(f.name) for f in schema)
    )
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    driver = conn.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
        for batch in _batches(path):
            sink = pa.BufferOutputStream()
            pacsv.write_csv(batch, sink, options)
            copy.write(memoryview(sink.getvalue()))


def _reset_sequences(conn: Connection, entry: TableEntry, schema: pa.Schema) -> None:
    if len(entry.primary_key) != 1 or not pa.types.is_integer(
        schema.field(entry.primary_key[0]).type
    ):
        return
    column = entry.primary_key[0]
    sequence = conn.execute(
        text("SELECT pg_get_serial_sequence(:table, :column)"),
        {"table": entry.name, "column": column},
    ).scalar_one()
    if sequence is None:
        return
    table, key = _quote(conn, entry.name), _quote(conn, column)
    conn.execute(
        text(
            f"SELECT setval(:sequence, COALESCE((SELECT max({key}) FROM {table}), 1), "
            f"(SELECT max({key}) FROM {table}) IS NOT NULL)"
        ),
        {"sequence": sequence},
    )


def _verify(conn: Connection, entry: TableEntry, schema: pa.Schema) -> None:
    digest = TableDigest(schema)
    for batch in read_batches(conn, entry.name, schema, entry.order_by):
        digest.update(batch)
    if digest.rows != entry.rows or digest.hexdigest() != entry.digest:
        raise SinkError(
            f"table {entry.name} read back {digest.rows} rows (digest {digest.hexdigest()[:16]}), "
            f"the backup holds {entry.rows} (digest {entry.digest[:16]}); the restore was "
            "rolled back and nothing changed: report this with the backup's name"
        )


def _rewrite_artefact_urls(conn: Connection, old_root: str, new_root: str) -> int:
    columns = pa.schema([("id", pa.int32()), ("artefact_url", pa.string())])
    models = sql_table("models", columns, conn.dialect.name)
    rows = conn.execute(models.select()).all()
    changed = 0
    for row in rows:
        if row.artefact_url.startswith(old_root + "/"):
            url = new_root + row.artefact_url[len(old_root) :]
            conn.execute(update(models).where(models.c.id == row.id).values(artefact_url=url))
            changed += 1
    return changed


def load_database(
    engine: Engine,
    manifest: Manifest,
    staged: Path,
    current: str | None,
    registry_roots: tuple[str, str] | None = None,
) -> int:
    """Replace the target's schema and rows with the backup's, in one transaction.

    Parameters
    ----------
    engine
        The target; the caller has checked it is empty or that the user forced the restore.
    manifest
        The checked manifest.
    staged
        Local folder holding the verified files at their manifest paths.
    current
        The target's revision before the restore (from :func:`check_revision`).
    registry_roots
        (backup's registry URL, target registry URL) when they differ: ``models.artefact_url``
        is moved from the one to the other after the check.

    Returns
    -------
    int
        How many artefact URLs were rewritten.

    Raises
    ------
    SinkError
        The database refused a statement, or a table read back differs from the backup; the
        transaction was rolled back.
    """
    postgres = engine.dialect.name == "postgresql"
    with transaction(engine) as conn:
        if current is not None:
            command.downgrade(alembic_config(conn), "base")
        if postgres:  # leftovers of forecast runs that never committed
            for name in inspect(conn).get_table_names():
                if is_forecast_partition(name):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_quote(conn, name)}")
        command.upgrade(alembic_config(conn), manifest.database.revision)
        for entry in manifest.tables:
            path = staged / entry.file
            if postgres:
                _load_postgres(conn, entry, path)
                _reset_sequences(conn, entry, pq.read_schema(path))
            else:
                _load_sqlite(conn, entry, path)
            logger.info("loaded %s: %d rows", entry.name, entry.rows)
        for entry in manifest.tables:
            _verify(conn, entry, pq.read_schema(staged / entry.file))
        rewritten = 0
        if registry_roots is not None and any(t.name == "models" for t in manifest.tables):
            rewritten = _rewrite_artefact_urls(conn, *registry_roots)
    logger.info("restored %d tables into %s", len(manifest.tables), mask_url(engine.url))
    return rewritten


def refuse_occupied(occupied: dict[str, int], target: str) -> BackupRefusedError:
    """The refusal to overwrite a database that holds rows."""
    listed = ", ".join(f"{name} ({rows} rows)" for name, rows in sorted(occupied.items()))
    return BackupRefusedError(
        f"database {target} is not empty: {listed}; restore into an empty database, or pass "
        "--force to replace everything in it with the backup"
    )
