"""Conformance of the forecasts-table sinks (SQLite and PostgreSQL): all rows of a run appear at
commit, batches are idempotent, re-runs replace, aborts leave nothing, lost connections retry."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
from sqlalchemy import Engine, select

from pipelines.forecast.postgres_sink import WRITER_APPLICATION
from pipelines.forecast.rows import RowContext
from pipelines.forecast.sql_sink import batch_writer, sql_sink, sql_target
from schemas.forecast_tables import forecasts
from tests.pipelines.forecast.helpers import psycopg_url, run_rows, staging_leftovers, terminate

SHA = "ab" * 32
LEADS = (6, 12)
# Two initial times on one day, one on the next: two PostgreSQL day partitions.
INITS = np.array([1_577_836_800, 1_577_858_400, 1_577_923_200], dtype=np.int64)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _context(run_id: str, n_lat: int = 3, n_lon: int = 4) -> RowContext:
    return RowContext(
        run_id=run_id,
        model_sha256=SHA,
        channels=(("t2m", None), ("t", 500)),
        lat=np.linspace(10.0, -10.0, n_lat),
        lon=np.linspace(-20.0, 20.0, n_lon, endpoint=False),
    )


def _forecasts(seed: int, n_inits: int = 3, n_lat: int = 3, n_lon: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(280, 10, (n_inits, len(LEADS), 2, n_lat, n_lon)).astype(np.float32)


def _write_run(engine: Engine, run_id: str, attempt: str, values: np.ndarray) -> int:
    target = sql_target(_url(engine), run_id, attempt)
    sink = sql_sink(target)
    sink.prepare(INITS)
    writer = batch_writer(target, _context(run_id))
    writer.write(INITS[:2], LEADS, values[:2])
    writer.write(INITS[2:], LEADS, values[2:])
    writer.close()
    return sink.commit()


def test_rows_appear_at_commit_and_batches_are_idempotent(engine: Engine) -> None:
    values = _forecasts(0)
    target = sql_target(_url(engine), "run-a", "a0000001")
    sink = sql_sink(target)
    sink.prepare(INITS)
    writer = batch_writer(target, _context("run-a"))
    assert writer.write(INITS[:2], LEADS, values[:2]) == 2 * 2 * 2 * 12
    writer.write(INITS[2:], LEADS, values[2:])
    assert run_rows(engine, "run-a") == (0, 0.0)  # staged, not visible
    writer.write(INITS[:2], LEADS, values[:2])  # a retried batch replaces its own rows
    writer.close()
    assert sink.commit() == values.size
    assert staging_leftovers(engine) == 0

    with engine.connect() as conn:
        rows = conn.execute(
            select(forecasts).order_by(
                forecasts.c.init_time,
                forecasts.c.lead_hours,
                forecasts.c.variable.desc(),
                forecasts.c.lat.desc(),
                forecasts.c.lon,
            )
        ).all()
    assert len(rows) == values.size
    got = np.array([r.value for r in rows], dtype=np.float32).reshape(values.shape)
    np.testing.assert_array_equal(got, values)
    first = rows[0]
    assert first.run_id == "run-a" and first.model_sha256 == SHA
    assert first.init_time == datetime(2020, 1, 1, tzinfo=UTC)
    assert first.valid_time == datetime(2020, 1, 1, 6, tzinfo=UTC)
    assert (first.variable, first.level, first.lat, first.lon) == ("t2m", None, 10.0, -20.0)
    levelled = [r for r in rows if r.variable == "t"]
    assert {r.level for r in levelled} == {500}


def test_rerun_replaces_and_other_runs_stay(engine: Engine) -> None:
    _write_run(engine, "run-b", "b0000001", _forecasts(1))
    _write_run(engine, "run-c", "c0000001", _forecasts(2))
    second = _forecasts(3)
    assert _write_run(engine, "run-b", "b0000002", second) == second.size
    count, total = run_rows(engine, "run-b")
    assert count == second.size
    assert total == pytest.approx(float(second.astype(np.float64).sum()), rel=1e-9)
    assert run_rows(engine, "run-c")[0] == second.size
    assert staging_leftovers(engine) == 0


def test_abort_leaves_nothing_and_keeps_the_committed_run(engine: Engine) -> None:
    committed = _forecasts(4)
    _write_run(engine, "run-d", "d0000001", committed)
    target = sql_target(_url(engine), "run-d", "d0000002")
    sink = sql_sink(target)
    sink.prepare(INITS)
    writer = batch_writer(target, _context("run-d"))
    writer.write(INITS[:2], LEADS, _forecasts(5)[:2])
    writer.close()
    sink.abort()
    assert run_rows(engine, "run-d")[0] == committed.size
    assert run_rows(engine, "run-d")[1] == pytest.approx(float(committed.sum(dtype=np.float64)))
    assert staging_leftovers(engine) == 0


@pytest.mark.db
def test_postgres_writer_survives_a_terminated_connection(forecast_pg_url: str) -> None:
    """pg_terminate_backend of the writer during its COPY: the batch is retried, and the run's
    rows equal those of an undisturbed write."""
    from pipelines.db import make_engine, migrate

    engine = make_engine(forecast_pg_url)
    migrate(engine)
    n_lat, n_lon = 200, 300
    values = _forecasts(6, n_lat=n_lat, n_lon=n_lon)
    target = sql_target(forecast_pg_url, "run-kill", "e0000001", rows_per_copy=20_000)
    sink = sql_sink(target)
    sink.prepare(INITS)
    writer = batch_writer(target, _context("run-kill", n_lat, n_lon))
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 30
        with psycopg.connect(psycopg_url(engine), autocommit=True) as conn:
            while time.monotonic() < deadline and not killed:
                active = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND query LIKE 'COPY%%' AND state = 'active'",
                    (WRITER_APPLICATION,),
                ).fetchone()
                if active and active[0]:
                    killed.append(terminate(engine, WRITER_APPLICATION))
                time.sleep(0.005)

    thread = threading.Thread(target=killer)
    thread.start()
    writer.write(INITS, LEADS, values)
    thread.join()
    writer.close()
    assert killed and killed[0] >= 1, "the writer's backend was never caught mid-COPY"
    assert sink.commit() == values.size
    count, total = run_rows(engine, "run-kill")
    assert count == values.size
    assert total == pytest.approx(float(values.sum(dtype=np.float64)), rel=1e-9)
    assert staging_leftovers(engine) == 0
    sink_again = sql_sink(sql_target(forecast_pg_url, "run-kill", "e0000002"))
    sink_again.prepare(INITS)
    sink_again.abort()
    engine.dispose()
