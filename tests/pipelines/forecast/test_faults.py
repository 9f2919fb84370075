"""Faults during a real run: a predictor actor SIGKILLed, the writer's PostgreSQL backend
terminated. The run completes and its rows equal those of an undisturbed run."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import xarray as xr
from sqlalchemy import Engine

from pipelines.forecast.postgres_sink import WRITER_APPLICATION
from pipelines.forecast.runner import ForecastSummary, run_forecast
from pipelines.forecast.store import open_forecast_store
from schemas.forecast_config import ForecastConfig
from schemas.settings import Settings
from tests.pipelines.forecast.helpers import (
    actor_pids,
    hourly_config,
    make_inputs,
    psycopg_url,
    run_rows,
    staging_leftovers,
    table_fingerprint,
    terminate,
)

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]
N_INITS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, xr.Dataset]:
    return make_inputs(tmp_path_factory.mktemp("faults"), times=40, n_lat=30, n_lon=45)


def _config(setup: tuple[Path, Path, xr.Dataset], out: Path, run_id: str) -> ForecastConfig:
    store, model, _ = setup
    return hourly_config(store, model, out, run_id, end="2020-01-01T17:00Z", lead_step=3)


def _settings(engine: Engine) -> Settings:
    return Settings(database_url=engine.url.render_as_string(hide_password=False))


def _chunks_written(out: Path) -> int:
    return len(list(out.glob("runs/*/t2m/*.0.0.0")))


def _disturbed_run(
    config: ForecastConfig, engine: Engine, disturb: Callable[[], int | None]
) -> tuple[ForecastSummary, list[int]]:
    """Run ``config`` while ``disturb`` is called every few ms until it returns a value."""
    hits: list[int] = []
    done = threading.Event()

    def monitor() -> None:
        while not done.is_set() and not hits:
            hit = disturb()
            if hit is not None:
                hits.append(hit)
            time.sleep(0.005)

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    try:
        summary = run_forecast(config, _settings(engine), engine)
    finally:
        done.set()
        thread.join()
    return summary, hits


def test_killed_actor_is_replaced_and_rows_match(
    tmp_path: Path, setup: tuple[Path, Path, xr.Dataset], engine: Engine
) -> None:
    calm = run_forecast(_config(setup, tmp_path / "calm.zarr", "calm"), _settings(engine), engine)
    out = tmp_path / "killed.zarr"

    def kill_after_first_chunk() -> int | None:
        written = _chunks_written(out)
        if 1 <= written < N_INITS - 2:
            for pid in actor_pids():
                os.kill(pid, signal.SIGKILL)
                return pid
        return None

    summary, killed = _disturbed_run(_config(setup, out, "killed"), engine, kill_after_first_chunk)
    assert killed, "no predictor actor was killed mid-run; the run finished too fast"
    assert set(summary.pids) - {killed[0]}, "no replacement actor did any work"
    assert summary.status == "succeeded"
    assert run_rows(engine, "killed") == run_rows(engine, "calm")
    assert run_rows(engine, "killed")[0] == calm.rows == N_INITS * 8 * 2 * 30 * 45
    assert table_fingerprint(engine, "killed") == table_fingerprint(engine, "calm")
    assert summary.checksum == calm.checksum
    assert open_forecast_store(str(out)).identical(
        open_forecast_store(str(tmp_path / "calm.zarr")).assign_attrs(
            open_forecast_store(str(out)).attrs
        )
    )
    assert staging_leftovers(engine) == 0


@pytest.mark.db
def test_terminated_writer_connection_is_retried(
    tmp_path: Path, setup: tuple[Path, Path, xr.Dataset], forecast_pg_url: str
) -> None:
    from pipelines.db import make_engine, migrate

    engine = make_engine(forecast_pg_url)
    migrate(engine)
    calm = run_forecast(_config(setup, tmp_path / "c.zarr", "pg-calm"), _settings(engine), engine)

    def terminate_active_copy() -> int | None:
        with psycopg.connect(psycopg_url(engine), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND query LIKE 'COPY%%' AND state = 'active'",
                (WRITER_APPLICATION,),
            ).fetchone()
        if row and row[0]:
            return terminate(engine, WRITER_APPLICATION) or None
        return None

    config = _config(setup, tmp_path / "t.zarr", "pg-terminated")
    summary, terminated = _disturbed_run(config, engine, terminate_active_copy)
    assert terminated, "the writer's backend was never caught mid-COPY"
    assert summary.rows == calm.rows
    assert run_rows(engine, "pg-terminated") == run_rows(engine, "pg-calm")
    assert table_fingerprint(engine, "pg-terminated") == table_fingerprint(engine, "pg-calm")
    assert staging_leftovers(engine) == 0
    engine.dispose()
