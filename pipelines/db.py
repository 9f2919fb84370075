"""Database engines, migrations and transactions for SQLite and PostgreSQL.

``make_engine`` builds (and checks) an engine from a ``DATABASE_URL``; ``migrate`` brings the
schema to the newest Alembic revision; ``session_scope`` and ``transaction`` wrap work in one
transaction. SQLAlchemy errors are translated into :class:`~pipelines.errors.SinkError` whose
message names the database (password masked) and the likely fix.

On SQLite every connection runs in WAL mode with a busy timeout, and transactions are begun
explicitly (``BEGIN`` or, for writes, ``BEGIN IMMEDIATE``) so that DDL is transactional and a
read-then-write transaction never fails on a lock upgrade.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

import schemas.migrations
from pipelines.errors import ConfigError, SinkError

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
POSTGRES_CONNECT_TIMEOUT_S = 10
# Arbitrary constant key of the PostgreSQL advisory lock that serialises migrations.
_MIGRATION_LOCK_KEY = 0x636C696D617465  # "climate"
# Execution option read by the SQLite "begin" hook: "DEFERRED" or "IMMEDIATE".
_SQLITE_BEGIN = "climate_sqlite_begin"
# Alembic keeps its context in module globals, so one migration at a time per process.
_MIGRATE_LOCK = threading.Lock()
_FIX = {
    "sqlite": "check that the directory exists and is writable, or set DATABASE_URL",
    "postgresql": "is PostgreSQL running and reachable? set DATABASE_URL "
    "(postgresql+psycopg://user:password@host:5432/dbname)",
}


def mask_url(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"


def _normalise(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # Neither the URL nor the parser's message (which quotes it) is shown: it may hold a
        # password. ``from None`` keeps it out of tracebacks too.
        raise ConfigError(
            "DATABASE_URL is not a database URL (its value is not shown: it may hold a "
            "password); use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:5432/dbname, with special characters "
            "in the password percent-encoded"
        ) from None
    backend = parsed.get_backend_name()
    if backend in {"postgres", "postgresql"}:
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise ConfigError(
        f"DATABASE_URL {mask_url(parsed)} uses the unsupported backend {backend!r}; "
        "use sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/dbname"
    )


def _fix_for(url: URL) -> str:
    return _FIX.get(url.get_backend_name(), "set DATABASE_URL")


def _describe(exc: BaseException, url: URL) -> str:
    """The error text of ``exc`` (its DBAPI error if any) with the password scrubbed."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()[0:3]
    joined = " ".join(line.strip() for line in text)
    if url.password:
        joined = joined.replace(str(url.password), "***")
    return joined


def sink_error(exc: BaseException, url: str | URL, action: str) -> SinkError:
    """A :class:`SinkError` for a failed database ``action``, naming the masked URL and a fix."""
    parsed = make_url(url)
    return SinkError(
        f"database {mask_url(parsed)}: could not {action}: {_describe(exc, parsed)}; "
        f"{_fix_for(parsed)}"
    )


@contextmanager
def translate_errors(engine: Engine, action: str) -> Iterator[None]:
    """Re-raise SQLAlchemy errors raised inside the block as :class:`SinkError`.

    Parameters
    ----------
    engine
        The engine whose URL the message names.
    action
        What was being done, as a verb phrase ("record run abc").
    """
    try:
        yield
    except SQLAlchemyError as exc:
        raise sink_error(exc, engine.url, action) from exc


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        return None  # URI filenames: the caller manages the path
    return Path(database)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun by _on_begin below
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, *, echo: bool = False, check: bool = True) -> Engine:
    """Build an engine for a SQLite or PostgreSQL URL and check that it connects.

    Parameters
    ----------
    url
        A SQLAlchemy URL, e.g. ``sqlite:///output/climate.db`` (relative to the working
        directory; the parent directory is created) or ``postgresql://user@host:5432/db``
        (the psycopg 3 driver is used whatever driver the URL names for PostgreSQL).
    echo
        Log every SQL statement.
    check
        Open one connection now so that a wrong URL fails here rather than mid-job.

    Returns
    -------
    Engine
        The engine; no tables are created (call :func:`migrate`).

    Raises
    ------
    ConfigError
        The URL cannot be parsed or names an unsupported backend.
    SinkError
        The database cannot be reached or the SQLite directory cannot be created.
    """
    parsed = _normalise(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            path = _sqlite_file(parsed)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise SinkError(
                        f"database {mask_url(parsed)}: cannot create the directory "
                        f"{path.parent}: {exc}; {_fix_for(parsed)}"
                    ) from exc
                engine = create_engine(
                    parsed,
                    echo=echo,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
                )
            else:
                engine = create_engine(
                    parsed,
                    echo=echo,
                    poolclass=StaticPool,
                    connect_args={"check_same_thread": False},
                )
            _install_sqlite_hooks(engine)
        else:
            engine = create_engine(
                parsed,
                echo=echo,
                pool_pre_ping=True,
                connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
            )
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"DATABASE_URL {mask_url(parsed)}: the database driver is not installed ({exc}); "
            "install psycopg[binary] or use a sqlite:/// URL"
        ) from exc
    if check:
        with translate_errors(engine, "connect"), engine.connect():
            pass
    logger.debug("database engine for %s", mask_url(parsed))
    return engine


def _write_options(engine: Engine) -> Engine:
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
    return engine


@contextmanager
def transaction(engine: Engine, *, write: bool = True) -> Iterator[Connection]:
    """A Core connection inside one transaction: committed on success, rolled back on error.

    Parameters
    ----------
    engine
        From :func:`make_engine`.
    write
        On SQLite, take the write lock at the start (``BEGIN IMMEDIATE``) so that the
        transaction never fails halfway on a lock upgrade; pass ``False`` for read-only work.

    Raises
    ------
    SinkError
        A database error happened inside the block.
    """
    bind = _write_options(engine) if write else engine
    with translate_errors(engine, "run a transaction"), bind.begin() as conn:
        yield conn


@contextmanager
def session_scope(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """An ORM session inside one transaction: committed on success, rolled back on error.

    Objects stay readable after the block (``expire_on_commit=False``).

    Parameters
    ----------
    engine
        From :func:`make_engine`.
    write
        See :func:`transaction`.

    Raises
    ------
    SinkError
        A database error happened inside the block (the transaction was rolled back).
    """
    bind = _write_options(engine) if write else engine
    session = Session(bind=bind, expire_on_commit=False)
    try:
        with translate_errors(engine, "run a transaction"):
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    finally:
        session.close()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for ``schemas/migrations`` built in code (no ``alembic.ini``).

    Parameters
    ----------
    connection
        Handed to ``env.py``, which then migrates on it instead of opening its own.
    """
    location = str(Path(schemas.migrations.__file__).parent)
    cfg = Config()
    cfg.set_main_option("script_location", location.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest revision id of the migration scripts."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; ``None`` when it was never migrated."""
    with translate_errors(engine, "read the schema revision"), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database schema to ``revision`` (Alembic, programmatic); idempotent.

    Concurrent callers are serialised: within a process by a lock, across processes by a
    PostgreSQL advisory lock or the SQLite write lock, held for the whole upgrade, which runs
    in one transaction. A caller that finds the schema current does nothing.

    Parameters
    ----------
    engine
        From :func:`make_engine`.
    revision
        Target revision; the newest by default.

    Raises
    ------
    SinkError
        The database refused the migration (it is rolled back).
    """
    with (
        _MIGRATE_LOCK,
        translate_errors(engine, f"migrate the schema to {revision}"),
        _write_options(engine).begin() as conn,
    ):
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(alembic_config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if before != after:
        logger.info("migrated %s from %s to %s", mask_url(engine.url), before, after)
