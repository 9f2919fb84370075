"""The run ledger and the ingest ledger, over the ``runs`` and ``ingest_files`` tables.

Each method is one transaction. Upserts use ``INSERT ... ON CONFLICT DO UPDATE`` (SQLite and
PostgreSQL both have it), so concurrent writers of the same key never collide. Records are
returned as frozen dataclasses, detached from any session.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, Row, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipelines.db import transaction
from pipelines.errors import SinkError
from schemas.tables import (
    FILE_STATUSES,
    RUN_KINDS,
    RUN_STATUSES,
    IngestFile,
    Run,
    new_run_id,
    utcnow,
)

logger = logging.getLogger(__name__)

_RUNS: Table = Run.__table__  # type: ignore[assignment]
_FILES: Table = IngestFile.__table__  # type: ignore[assignment]
_FILE_KEY = ("store_url", "file_url", "fingerprint")
_FINAL_RUN_STATUSES = RUN_STATUSES - {"running"}


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``."""

    run_id: str
    kind: str
    status: str
    config: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class FileRecord:
    """One row of ``ingest_files``; ``times`` are sorted unique epoch seconds (UTC)."""

    id: int
    store_url: str
    file_url: str
    size: int
    fingerprint: str
    checksum: str | None
    status: str
    times: tuple[int, ...]
    time_start: datetime | None
    time_end: datetime | None
    n_times: int
    error: str | None
    run_id: str
    updated_at: datetime


def _run_record(row: Row[Any]) -> RunRecord:
    m = row._mapping
    return RunRecord(
        run_id=m["run_id"],
        kind=m["kind"],
        status=m["status"],
        config=m["config"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        summary=m["summary"],
        error=m["error"],
    )


def _file_record(row: Row[Any]) -> FileRecord:
    m = row._mapping
    return FileRecord(
        id=m["id"],
        store_url=m["store_url"],
        file_url=m["file_url"],
        size=m["size"],
        fingerprint=m["fingerprint"],
        checksum=m["checksum"],
        status=m["status"],
        times=tuple(int(t) for t in m["times"]),
        time_start=m["time_start"],
        time_end=m["time_end"],
        n_times=m["n_times"],
        error=m["error"],
        run_id=m["run_id"],
        updated_at=m["updated_at"],
    )


def _check_choice(name: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {sorted(allowed)}; pass one of those")


def _check_length(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValueError(
            f"{name} is {len(value)} characters long, over the ledger's limit of {limit}: "
            f"{value[:80]!r}...; shorten it"
        )


def _json_dict(name: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} is not JSON-serialisable ({exc}); pass plain types, "
            "e.g. model.model_dump(mode='json')"
        ) from exc


def _epoch_seconds(times: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(times)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"times must be a 1-D sequence of integer epoch seconds, got dtype {arr.dtype} "
            f"and shape {arr.shape}; convert datetime64 with .astype('datetime64[s]')"
            ".astype('int64')"
        )
    return np.unique(arr.astype(np.int64))


def _to_utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _upsert(
    conn: Connection,
    table: Table,
    values: dict[str, Any],
    key: Sequence[str],
    update_columns: Sequence[str] | None = None,
) -> None:
    """Insert ``values``; where the ``key`` row exists, update ``update_columns`` instead.

    ``update_columns`` defaults to every given column outside the key.
    """
    columns = [c for c in values if c not in key] if update_columns is None else update_columns
    dialect = conn.dialect.name
    if dialect == "postgresql":
        pg_stmt = postgresql.insert(table).values(**values)
        pg_set = {c: pg_stmt.excluded[c] for c in columns}
        conn.execute(pg_stmt.on_conflict_do_update(index_elements=list(key), set_=pg_set))
    elif dialect == "sqlite":
        lite_stmt = sqlite.insert(table).values(**values)
        lite_set = {c: lite_stmt.excluded[c] for c in columns}
        conn.execute(lite_stmt.on_conflict_do_update(index_elements=list(key), set_=lite_set))
    else:
        raise SinkError(
            f"the ledger supports SQLite and PostgreSQL, not {dialect}; "
            "set DATABASE_URL to a sqlite:/// or postgresql+psycopg:// URL"
        )


class RunLedger:
    """Start, finish and look up job runs in the ``runs`` table.

    Parameters
    ----------
    engine
        A migrated engine (see :func:`pipelines.db.make_engine` and ``migrate``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, kind: str, config: dict[str, Any], run_id: str | None = None) -> str:
        """Record a run as running and return its id.

        Parameters
        ----------
        kind
            One of ``ingest``, ``train``, ``evaluate``, ``forecast``.
        config
            The run's configuration; must be JSON-serialisable.
        run_id
            Reuse this id: an existing run of that id is reset to running (a re-run replaces
            it). A fresh uuid4 hex when omitted.

        Returns
        -------
        str
            The run id.
        """
        _check_choice("run kind", kind, RUN_KINDS)
        run_id = run_id or new_run_id()
        _check_length("run_id", run_id, 64)
        values = {
            "run_id": run_id,
            "kind": kind,
            "status": "running",
            "config": _json_dict("config", config),
            "started_at": utcnow(),
            "finished_at": None,
            "summary": None,
            "error": None,
        }
        with transaction(self.engine) as conn:
            _upsert(conn, _RUNS, values, ("run_id",))
        logger.info("run %s (%s) started", run_id, kind)
        return run_id

    def finish(
        self,
        run_id: str,
        status: str,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Record how a run ended.

        Parameters
        ----------
        run_id
            A run recorded by :meth:`start`.
        status
            ``succeeded``, ``failed`` or ``partial``.
        summary
            Counts, timings, failures; must be JSON-serialisable.
        error
            The error text of a failed run.

        Raises
        ------
        SinkError
            No run has that id.
        """
        _check_choice("final run status", status, _FINAL_RUN_STATUSES)
        stmt = (
            update(_RUNS)
            .where(_RUNS.c.run_id == run_id)
            .values(
                status=status,
                finished_at=utcnow(),
                summary=_json_dict("summary", summary),
                error=error,
            )
        )
        with transaction(self.engine) as conn:
            if conn.execute(stmt).rowcount == 0:
                raise SinkError(
                    f"run {run_id!r} is not in the run ledger of {self.engine.url!r}; "
                    "call RunLedger.start() first"
                )
        logger.info("run %s finished: %s", run_id, status)

    def get(self, run_id: str) -> RunRecord | None:
        """The run of that id, or ``None``."""
        with transaction(self.engine, write=False) as conn:
            row = conn.execute(select(_RUNS).where(_RUNS.c.run_id == run_id)).first()
        return None if row is None else _run_record(row)

    def list(self, kind: str | None = None, limit: int = 50) -> builtins.list[RunRecord]:
        """The newest runs first, optionally of one kind only."""
        stmt = select(_RUNS).order_by(_RUNS.c.started_at.desc(), _RUNS.c.run_id).limit(limit)
        if kind is not None:
            stmt = stmt.where(_RUNS.c.kind == kind)
        with transaction(self.engine, write=False) as conn:
            return [_run_record(row) for row in conn.execute(stmt)]


class IngestLedger:
    """Which source files were written into which store, at which fingerprint.

    A row is keyed by ``(store_url, file_url, fingerprint)``: a file whose fingerprint changed
    is a new row. Only ``committed`` rows count as present in the store.

    Parameters
    ----------
    engine
        A migrated engine (see :func:`pipelines.db.make_engine` and ``migrate``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def committed(self, store_url: str) -> list[FileRecord]:
        """The committed files of a store, ordered by file URL."""
        stmt = (
            select(_FILES)
            .where(_FILES.c.store_url == store_url, _FILES.c.status == "committed")
            .order_by(_FILES.c.file_url, _FILES.c.id)
        )
        with transaction(self.engine, write=False) as conn:
            return [_file_record(row) for row in conn.execute(stmt)]

    def find_committed(self, store_url: str, file_url: str, fingerprint: str) -> FileRecord | None:
        """The committed row of this file at this fingerprint, or ``None``."""
        stmt = select(_FILES).where(
            _FILES.c.store_url == store_url,
            _FILES.c.file_url == file_url,
            _FILES.c.fingerprint == fingerprint,
            _FILES.c.status == "committed",
        )
        with transaction(self.engine, write=False) as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _file_record(row)

    def committed_times(self, store_url: str) -> np.ndarray:
        """Sorted unique epoch seconds (int64, UTC) contributed by the committed files."""
        stmt = select(_FILES.c.times).where(
            _FILES.c.store_url == store_url, _FILES.c.status == "committed"
        )
        with transaction(self.engine, write=False) as conn:
            chunks = [np.asarray(times, dtype=np.int64) for times in conn.scalars(stmt)]
        if not chunks:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(chunks))

    def _write(
        self,
        *,
        run_id: str,
        store_url: str,
        file_url: str,
        size: int,
        fingerprint: str,
        status: str,
        extra: dict[str, Any],
        keep_data: bool,
    ) -> None:
        """Upsert one row; with ``keep_data`` an existing row keeps its times and checksum."""
        _check_choice("file status", status, FILE_STATUSES)
        _check_length("store_url", store_url, 1024)
        _check_length("file_url", file_url, 1024)
        _check_length("fingerprint", fingerprint, 128)
        if size < 0:
            raise ValueError(f"size {size} of {file_url} is negative; pass the size in bytes")
        values: dict[str, Any] = {
            "store_url": store_url,
            "file_url": file_url,
            "fingerprint": fingerprint,
            "size": int(size),
            "status": status,
            "run_id": run_id,
            "updated_at": utcnow(),
            "checksum": None,
            "times": [],
            "n_times": 0,
            "time_start": None,
            "time_end": None,
            "error": None,
            **extra,
        }
        update_columns = ["size", "status", "run_id", "updated_at", "error", *extra]
        with transaction(self.engine) as conn:
            if not keep_data:
                # Older versions of this file (other fingerprints) are superseded.
                conn.execute(
                    delete(_FILES).where(
                        _FILES.c.store_url == store_url,
                        _FILES.c.file_url == file_url,
                        _FILES.c.fingerprint != fingerprint,
                    )
                )
            _upsert(conn, _FILES, values, _FILE_KEY, list(dict.fromkeys(update_columns)))
        logger.debug("ledger %s: %s -> %s (run %s)", store_url, file_url, status, run_id)

    def mark_pending(
        self, run_id: str, store_url: str, file_url: str, size: int, fingerprint: str
    ) -> None:
        """Record that a run started writing this file into the store.

        A row that exists already (committed or failed) becomes pending and no longer counts
        as committed; its times are kept until the file is committed again.
        """
        self._write(
            run_id=run_id,
            store_url=store_url,
            file_url=file_url,
            size=size,
            fingerprint=fingerprint,
            status="pending",
            extra={},
            keep_data=True,
        )

    def mark_committed(
        self,
        run_id: str,
        store_url: str,
        file_url: str,
        size: int,
        fingerprint: str,
        checksum: str | None,
        times: Sequence[int] | np.ndarray,
    ) -> None:
        """Record that this file's data is in the store (insert or update on the key).

        Rows of the same file at other fingerprints (older versions of a file that changed)
        are removed in the same transaction, so a file has at most one committed row.

        Parameters
        ----------
        run_id
            The run that wrote the file; it must be in the run ledger.
        store_url, file_url, size, fingerprint
            The file and the store it was written into.
        checksum
            sha256 of the file's bytes, when computed.
        times
            Epoch seconds (UTC) of the time steps the file contributed.
        """
        if checksum is not None:
            _check_length("checksum", checksum, 128)
        epochs = _epoch_seconds(times)
        extra: dict[str, Any] = {
            "checksum": checksum,
            "times": [int(t) for t in epochs],
            "n_times": int(epochs.size),
            "time_start": _to_utc(int(epochs[0])) if epochs.size else None,
            "time_end": _to_utc(int(epochs[-1])) if epochs.size else None,
        }
        self._write(
            run_id=run_id,
            store_url=store_url,
            file_url=file_url,
            size=size,
            fingerprint=fingerprint,
            status="committed",
            extra=extra,
            keep_data=False,
        )

    def mark_failed(
        self,
        run_id: str,
        store_url: str,
        file_url: str,
        size: int,
        fingerprint: str,
        error: str,
    ) -> None:
        """Record that writing this file failed, with the error text.

        A committed row of the same key becomes failed: its data may be half overwritten.
        """
        self._write(
            run_id=run_id,
            store_url=store_url,
            file_url=file_url,
            size=size,
            fingerprint=fingerprint,
            status="failed",
            extra={"error": error},
            keep_data=True,
        )

    def forget_store(self, store_url: str) -> int:
        """Delete every row of a store (the store itself was deleted); return how many."""
        with transaction(self.engine) as conn:
            count = conn.execute(delete(_FILES).where(_FILES.c.store_url == store_url)).rowcount
        logger.info("ledger: forgot %d file(s) of %s", count, store_url)
        return int(count)
