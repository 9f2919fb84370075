"""Engines, migrations and transactions on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, insert, inspect, select, text

import schemas.api_tables  # api_keys of migration 0005
import schemas.forecast_tables  # the forecasts table of migration 0003
import schemas.operations_tables  # verification_scores of migration 0004
import schemas.registry_tables  # noqa: F401  (the models of migration 0002)
from pipelines.db import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    mask_url,
    migrate,
    session_scope,
    transaction,
)
from pipelines.errors import ConfigError, SinkError
from schemas.tables import Base, IngestFile, Run
from tests.helpers.processes import run_module

REPO = Path(__file__).resolve().parents[2]
CORE_TABLES = {"runs", "ingest_files"}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_head_is_core_or_later() -> None:
    assert head_revision() is not None
    script_dir = alembic_config().get_main_option("script_location")
    assert script_dir is not None
    assert (Path(script_dir) / "versions" / "0001_core.py").is_file()


def test_migrate_fresh_database_then_again_is_a_no_op(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        assert not CORE_TABLES & _tables(engine)

        migrate(engine)
        assert current_revision(engine) == head_revision()
        assert CORE_TABLES | {"alembic_version"} <= _tables(engine)
        with session_scope(engine) as session:
            session.add(Run(run_id="r1", kind="ingest", config={"a": 1}))

        migrate(engine)  # second run: nothing to do, data kept
        assert current_revision(engine) == head_revision()
        with session_scope(engine, write=False) as session:
            assert session.scalar(select(func.count()).select_from(Run)) == 1
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_indexes_and_unique_key_exist(engine: Engine) -> None:
    inspector = inspect(engine)
    uniques = {
        u["name"]: u["column_names"] for u in inspector.get_unique_constraints("ingest_files")
    }
    assert uniques["uq_ingest_files_store_url_file_url_fingerprint"] == [
        "store_url",
        "file_url",
        "fingerprint",
    ]
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("ingest_files")}
    assert indexes["ix_ingest_files_store_url_status"] == ["store_url", "status"]


def test_downgrade_to_base_then_upgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert current_revision(engine) is None
        assert not CORE_TABLES & _tables(engine)
        migrate(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_an_upgrade_keeps_the_rows_of_the_earlier_schema(database_url: str) -> None:
    """A database in use (runs referenced by skill scores) migrates to head with its rows."""
    from pipelines.ledger import RunLedger
    from pipelines.skill_table import SkillTable
    from tests.pipelines.registry_helpers import passing_rows

    engine = make_engine(database_url)
    try:
        migrate(engine, "0003_forecasts")
        run_id = RunLedger(engine).start("evaluate", {})
        SkillTable(engine).record(run_id, "m", "v", "0" * 64, passing_rows())
        migrate(engine)
        assert current_revision(engine) == head_revision()
        assert "verification_scores" in _tables(engine)
        assert RunLedger(engine).get(run_id) is not None
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM skill_scores")).scalar_one() > 0
    finally:
        engine.dispose()


def test_concurrent_migrations_in_threads(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
    finally:
        for e in engines:
            e.dispose()


def test_concurrent_migrations_in_processes(database_url: str) -> None:
    code = (
        "import sys; from pipelines.db import make_engine, migrate; "
        "e = make_engine(sys.argv[1]); migrate(e); e.dispose()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], [err for _, err in results]
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_sqlite_creates_the_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "climate.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SinkError, match="cannot create the directory") as info:
        make_engine(f"sqlite:///{blocker / 'climate.db'}")
    assert "DATABASE_URL" in str(info.value)


def test_sqlite_in_memory_keeps_one_database() -> None:
    engine = make_engine("sqlite://")
    try:
        migrate(engine)
        assert _tables(engine) >= CORE_TABLES
    finally:
        engine.dispose()


def test_unreachable_postgres_names_the_url_without_the_password() -> None:
    url = "postgresql://climate:s3cret-pw@127.0.0.1:1/climate"
    with pytest.raises(SinkError) as info:
        make_engine(url)
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "climate:***@" in message
    assert "s3cret-pw" not in message
    assert "PostgreSQL running" in message
    assert "DATABASE_URL" in message
    assert isinstance(info.value, OSError)
    assert info.value.__cause__ is not None


def test_mask_url_hides_the_password() -> None:
    assert mask_url("postgresql+psycopg://u:pw@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"


def test_unsupported_or_bad_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported backend"):
        make_engine("mysql://u:pw@localhost/db")
    with pytest.raises(ConfigError, match="not a database URL"):
        make_engine("not a url")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://admin:hunter2@db.internal:notaport/climate",
        "postgresql//admin:hunter2@db.internal/climate",
        "admin:hunter2",
    ],
)
def test_an_unparseable_url_is_reported_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError, match="not a database URL") as info:
        make_engine(url)
    assert "hunter2" not in str(info.value)
    assert info.value.__suppress_context__, "the parser's message (which quotes it) is hidden"
    assert "hunter2" not in mask_url(url)


def test_an_entrypoint_does_not_echo_an_unparseable_url(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://admin:hunter2@db.internal:x/climate"}
    result = run_module(["jobs.forecast", "--config", "configs/forecast.yaml"], env)
    assert result.returncode == 2
    assert "not a database URL" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.db
def test_plain_postgresql_scheme_uses_psycopg(postgres_url: str) -> None:
    engine = make_engine(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_session_scope_commits_and_rolls_back(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(Run(run_id="kept", kind="train", config={}))
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(Run(run_id="dropped", kind="train", config={}))
        session.flush()
        raise RuntimeError("boom")
    with session_scope(engine, write=False) as session:
        assert session.scalars(select(Run.run_id)).all() == ["kept"]


def test_session_scope_translates_database_errors(engine: Engine) -> None:
    with pytest.raises(SinkError, match="could not run a transaction"), session_scope(engine) as s:
        s.add(
            IngestFile(
                store_url="s",
                file_url="f",
                size=1,
                fingerprint="x",
                status="pending",
                run_id="no-such-run",
            )
        )


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    with pytest.raises(SinkError, match="naive datetime"), session_scope(engine) as session:
        session.add(Run(run_id="r", kind="train", config={}, started_at=datetime(2020, 1, 1)))


def test_transaction_rolls_back_on_error(engine: Engine) -> None:
    with pytest.raises(ValueError), transaction(engine) as conn:
        conn.execute(
            insert(Run).values(
                run_id="x",
                kind="train",
                status="running",
                config={},
                started_at=datetime.now().astimezone(),
            )
        )
        raise ValueError("abort")
    with transaction(engine, write=False) as conn:
        assert conn.scalar(select(func.count()).select_from(Run)) == 0
