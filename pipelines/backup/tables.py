"""A table's portable form: an Arrow schema, its rows read in a fixed order, a content digest.

The same rows give the same Arrow batches and the same digest on SQLite and PostgreSQL:
timestamps are UTC microseconds, JSON is canonical text (sorted keys), ``REAL`` is float32,
strings are ordered by bytes (``COLLATE "C"`` on PostgreSQL) and NULLs first. PostgreSQL rows
are read through ``COPY (SELECT ...) TO STDOUT`` as CSV parsed by Arrow; SQLite rows through
the driver, batch by batch. The digest hashes every column's validity and values as one
stream per column, so it does not depend on how the rows were split into batches.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    func,
    select,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from schemas.tables import UTCDateTime, json_type

JSON_FLAG = b"climate.json"
_PG_TIME = 'YYYY-MM-DD"T"HH24:MI:SS.US'  # of timezone('UTC', column): UTC, microseconds
_COPY_BLOCK = 4 * 1024 * 1024
TIMESTAMP = pa.timestamp("us", tz="UTC")


def _arrow_type(column: Column[Any]) -> tuple[pa.DataType, bool]:
    """(Arrow type, is JSON) of a SQLAlchemy column."""
    kind = column.type
    if isinstance(kind, JSON):
        return pa.string(), True
    if isinstance(kind, UTCDateTime | DateTime):
        return TIMESTAMP, False
    if isinstance(kind, Boolean):
        return pa.bool_(), False
    if isinstance(kind, BigInteger):
        return pa.int64(), False
    if isinstance(kind, Integer):
        return pa.int32(), False
    if isinstance(kind, REAL):
        return pa.float32(), False
    if isinstance(kind, Float):
        return pa.float64(), False
    if isinstance(kind, String):
        return pa.string(), False
    raise TypeError(f"column {column.table.name}.{column.name}: no portable type for {kind!r}")


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of ``table``'s columns, JSON columns flagged in the field metadata."""
    fields = []
    for column in table.columns:
        kind, is_json = _arrow_type(column)
        meta = {JSON_FLAG: b"1"} if is_json else None
        fields.append(pa.field(column.name, kind, nullable=bool(column.nullable), metadata=meta))
    return pa.schema(fields)


def is_json(field: pa.Field) -> bool:
    """Whether a field holds JSON text."""
    return bool(field.metadata and field.metadata.get(JSON_FLAG) == b"1")


def _sql_type(field: pa.Field, dialect: str) -> TypeEngine[Any]:
    if is_json(field):
        return json_type(nullable=field.nullable)
    kind = field.type
    if pa.types.is_timestamp(kind):
        # SQLite: the stored text, parsed by Arrow (much faster than row by row)
        return String() if dialect == "sqlite" else DateTime(timezone=True)
    if pa.types.is_boolean(kind):
        return Boolean()
    if pa.types.is_int64(kind):
        return BigInteger()
    if pa.types.is_integer(kind):
        return Integer()
    if pa.types.is_floating(kind):
        return REAL() if pa.types.is_float32(kind) else Double()
    return String()


def sql_table(name: str, schema: pa.Schema, dialect: str) -> Table:
    """A bare SQLAlchemy table of ``schema``'s columns, typed for reading them on ``dialect``."""
    return Table(name, MetaData(), *(Column(f.name, _sql_type(f, dialect)) for f in schema))


def _order(table: Table, columns: Sequence[str], dialect: str) -> list[ColumnElement[Any]]:
    ordered: list[ColumnElement[Any]] = []
    for name in columns:
        column: ColumnElement[Any] = table.c[name]
        if dialect == "postgresql" and isinstance(table.c[name].type, String):
            column = column.collate("C")
        ordered.append(column.asc().nulls_first())
    return ordered


def _canonical_json(value: Any, nullable: bool) -> str | None:
    if value is None and nullable:
        return None  # SQL NULL: a nullable JSON column stores None as NULL
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamps(values: Sequence[Any]) -> pa.Array:
    """UTC timestamps from aware datetimes, or from SQLite's naive UTC text."""
    array = pa.array(values)
    if pa.types.is_string(array.type) or pa.types.is_null(array.type):
        array = array.cast(pa.timestamp("us"))  # naive UTC text -> naive timestamps
    return array.cast(TIMESTAMP)


def _batch(rows: Sequence[Any], schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if is_json(field):
            canonical = [_canonical_json(v, field.nullable) for v in values]
            arrays.append(pa.array(canonical, type=field.type))
        elif pa.types.is_timestamp(field.type):
            arrays.append(_timestamps(values))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_batches(
    conn: Connection,
    name: str,
    schema: pa.Schema,
    order_by: Sequence[str],
    batch_rows: int = 50_000,
) -> Iterator[pa.RecordBatch]:
    """The rows of table ``name`` as Arrow batches of ``schema``, in ``order_by`` order.

    Reads inside the caller's transaction (a consistent snapshot when it is one), streaming
    (a server-side cursor on PostgreSQL) so memory stays at one batch.
    """
    table = sql_table(name, schema, conn.dialect.name)
    if conn.dialect.name == "postgresql":
        yield from _copy_batches(conn, table, schema, order_by)
        return
    stmt = select(table).order_by(*_order(table, order_by, conn.dialect.name))
    options = {"stream_results": True, "yield_per": batch_rows}  # this statement only
    result = conn.execute(stmt, execution_options=options)
    for rows in result.partitions(batch_rows):
        yield _batch(rows, schema)


class _CopyStream(io.RawIOBase):
    """The output of a running ``COPY ... TO STDOUT`` as a readable file."""

    def __init__(self, copy: Any) -> None:
        self.copy = copy
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            chunk = self.copy.read()
            if not chunk:
                return 0
            self.pending = bytes(chunk)
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _copy_batches(
    conn: Connection, table: Table, schema: pa.Schema, order_by: Sequence[str]
) -> Iterator[pa.RecordBatch]:
    """PostgreSQL: the ordered rows through ``COPY (SELECT ...) TO STDOUT`` parsed by Arrow.

    Timestamps leave as UTC text, JSON as text (made canonical here); NULL is the only
    unquoted empty field, so no other value can be mistaken for it.
    """
    columns: list[ColumnElement[Any]] = []
    types: dict[str, pa.DataType] = {}
    for field in schema:
        column: ColumnElement[Any] = table.c[field.name]
        if pa.types.is_timestamp(field.type):
            column = func.to_char(func.timezone("UTC", column), _PG_TIME)
            types[field.name] = pa.timestamp("us")
        elif is_json(field):
            column = cast(column, Text)
            types[field.name] = pa.string()
        else:
            types[field.name] = field.type
        columns.append(column.label(field.name))
    stmt = select(*columns).order_by(*_order(table, order_by, "postgresql"))
    query = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
        stream = io.BufferedReader(_CopyStream(copy), _COPY_BLOCK)
        if not stream.peek(1):
            return  # no rows (Arrow refuses an empty CSV)
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                column_names=schema.names, use_threads=False, block_size=_COPY_BLOCK
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in reader:
            yield _from_text(batch, schema)


def _from_text(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field, array in zip(schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            arrays.append(array.cast(TIMESTAMP))
        elif is_json(field):
            parsed = [None if t is None else json.loads(t) for t in array.to_pylist()]
            canonical = [_canonical_json(value, field.nullable) for value in parsed]
            arrays.append(pa.array(canonical, type=field.type))
        else:
            arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class TableDigest:
    """sha256 of a table's content, fed batch by batch in the table's fixed order."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows = 0
        self._parts = {
            (field.name, part): hashlib.sha256()
            for field in schema
            for part in ("validity", "lengths", "values")
        }

    def update(self, batch: pa.RecordBatch) -> None:
        """Add the next rows."""
        self.rows += batch.num_rows
        for field, array in zip(self.schema, batch.columns, strict=True):
            validity = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=np.uint8)
            self._parts[(field.name, "validity")].update(validity.tobytes())
            if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
                self._strings(field.name, array)
            else:
                self._numbers(field.name, array)

    def _numbers(self, name: str, array: pa.Array) -> None:
        if pa.types.is_timestamp(array.type):
            array = array.cast(pa.int64())
        filled = array.fill_null(False if pa.types.is_boolean(array.type) else 0)
        values = np.ascontiguousarray(filled.to_numpy(zero_copy_only=False))
        self._parts[(name, "values")].update(values.tobytes())

    def _strings(self, name: str, array: pa.Array) -> None:
        filled = array.fill_null("").cast(pa.large_string())
        filled = pa.concat_arrays([filled])  # offset 0, own buffers
        offsets = np.frombuffer(filled.buffers()[1], dtype=np.int64)[
            filled.offset : filled.offset + len(filled) + 1
        ]
        self._parts[(name, "lengths")].update(np.diff(offsets).tobytes())
        data = filled.buffers()[2]
        if data is not None and len(offsets):
            self._parts[(name, "values")].update(
                memoryview(data)[int(offsets[0]) : int(offsets[-1])]
            )

    def hexdigest(self) -> str:
        """The digest of every row added so far."""
        total = hashlib.sha256(f"rows:{self.rows}".encode())
        for field in self.schema:
            total.update(f"|{field.name}:{field.type}".encode())
            for part in ("validity", "lengths", "values"):
                total.update(self._parts[(field.name, part)].digest())
        return total.hexdigest()
