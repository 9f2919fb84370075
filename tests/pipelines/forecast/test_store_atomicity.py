"""A forecast run becomes visible all at once: a failed or SIGKILLed run leaves the previous
run's values and rows exactly as they were; a successful re-run replaces both."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from sqlalchemy import Engine

from pipelines.errors import StoreError
from pipelines.forecast.runner import run_forecast
from pipelines.forecast.store import ForecastStore, open_forecast_store
from schemas.forecast_config import ForecastConfig
from schemas.settings import Settings
from tests.helpers.processes import job_env, start_module
from tests.pipelines.forecast import helpers

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]
LONG = "2020-01-02T11:00Z"  # 30 hourly initial times: long enough to be caught midway


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, xr.Dataset]:
    return helpers.make_inputs(tmp_path_factory.mktemp("atomic"), times=60, n_lat=12, n_lon=18)


def _config(
    analysis: tuple[Path, Path, xr.Dataset], out: Path, run_id: str, end: str = "2020-01-01T17:00Z"
) -> ForecastConfig:
    store, model, _ = analysis
    return helpers.hourly_config(store, model, out, run_id, end=end, lead_step=1)


def _settings(engine: Engine) -> Settings:
    return Settings(database_url=engine.url.render_as_string(hide_password=False))


def _snapshot(out: Path, engine: Engine, run_id: str) -> tuple[xr.Dataset, list[tuple]]:
    return open_forecast_store(str(out)).load(), helpers.table_fingerprint(engine, run_id)


def _attempts(out: Path, run_id: str) -> list[Path]:
    return sorted((out / "runs").glob(f"{run_id}.*"))


def _wait_for_orphaned_actors(timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not helpers.actor_pids():
            return
        time.sleep(0.5)
    raise AssertionError(f"the killed driver's actors still run after {timeout} s")


def test_a_run_killed_mid_write_leaves_the_previous_run(
    tmp_path: Path, analysis: tuple[Path, Path, xr.Dataset], engine: Engine
) -> None:
    out = tmp_path / "forecast.zarr"
    settings = _settings(engine)
    first = run_forecast(_config(analysis, out, "first", LONG), settings, engine)
    before, rows_before = _snapshot(out, engine, "first")
    assert before.attrs["run_id"] == "first" and len(rows_before) == first.rows

    config_path = tmp_path / "second.yaml"
    second = _config(analysis, out, "second", LONG)
    config_path.write_text(yaml.safe_dump(second.model_dump(mode="json")))
    env = job_env(DATABASE_URL=settings.database_url)
    driver = start_module(["jobs.forecast", "--config", str(config_path)], env)  # own group
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if any(list(run.glob("t2m/*.0.0")) for run in _attempts(out, "second")):
                break
            time.sleep(0.01)
        assert driver.poll() is None, "the run ended before any chunk was seen; enlarge it"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)

    # Ray ends the dead driver's actors a little later: until then they may still write into
    # their own attempt's directory and staging rows, never into what readers see.
    _wait_for_orphaned_actors()
    after, rows_after = _snapshot(out, engine, "first")
    xr.testing.assert_identical(after, before)
    assert rows_after == rows_before
    assert helpers.run_rows(engine, "second") == (0, 0.0)
    assert ForecastStore(str(out)).current().run_id == "first"  # type: ignore[union-attr]

    again = run_forecast(second, settings, engine)
    replaced = open_forecast_store(str(out))
    assert replaced.attrs["run_id"] == "second"
    assert helpers.run_rows(engine, "second")[0] == again.rows == first.rows
    np.testing.assert_array_equal(replaced.t2m.values, before.t2m.values)  # same inputs
    assert len(_attempts(out, "second")) == 1, "the killed attempt was not pruned"
    assert helpers.staging_leftovers(engine) == 0


def test_a_failing_run_keeps_the_previous_run_and_a_rerun_replaces_it(
    tmp_path: Path, analysis: tuple[Path, Path, xr.Dataset], engine: Engine
) -> None:
    out = tmp_path / "forecast.zarr"
    settings = _settings(engine)
    run_forecast(_config(analysis, out, "kept", LONG), settings, engine)
    before, rows_before = _snapshot(out, engine, "kept")

    _, model, _ = analysis
    broken = tmp_path / "broken.zarr"
    helpers.make_store(broken, times=60, n_lat=12, n_lon=18)
    (broken / "t2m" / "1.0.0").write_bytes(b"not a blosc chunk")
    # a re-run of the same id fails on the second day's inputs, after the first day's writes
    doomed = _config((broken, model, before), out, "kept", LONG)
    with pytest.raises(StoreError, match="cannot read the inputs"):
        run_forecast(doomed, settings, engine)
    after, rows_after = _snapshot(out, engine, "kept")
    xr.testing.assert_identical(after, before)
    assert rows_after == rows_before
    assert len(_attempts(out, "kept")) == 1, "the failed attempt's directory is left"

    run_forecast(_config(analysis, out, "kept", LONG), settings, engine)
    rerun, rows_rerun = _snapshot(out, engine, "kept")
    assert rows_rerun == rows_before  # replaced, not duplicated
    xr.testing.assert_identical(rerun.drop_attrs(), before.drop_attrs())
    assert [run.run_id for run in ForecastStore(str(out)).committed()] == ["kept"]


def test_kept_runs_can_be_read_by_id(
    tmp_path: Path, analysis: tuple[Path, Path, xr.Dataset], engine: Engine
) -> None:
    out = tmp_path / "forecast.zarr"
    settings = _settings(engine)
    for run_id in ("a", "b", "c", "d"):
        data = _config(analysis, out, run_id).model_dump()
        data["output"]["zarr"]["keep_runs"] = 3
        data["init_times"]["end"] = "2020-01-01T08:00Z"
        run_forecast(ForecastConfig.model_validate(data), settings, engine)
    kept = [run.run_id for run in ForecastStore(str(out)).committed()]
    assert kept == ["d", "c", "b"]
    assert open_forecast_store(str(out), run_id="b").attrs["run_id"] == "b"
    assert sorted(p.name.split(".")[0] for p in (out / "runs").iterdir()) == ["b", "c", "d"]
    with pytest.raises(StoreError, match="not kept here"):
        open_forecast_store(str(out), run_id="a")
    with pytest.raises(StoreError, match="no committed forecast run"):
        open_forecast_store(str(tmp_path / "nothing.zarr"))
