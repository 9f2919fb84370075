"""A forecast run becomes visible all at once: a failed or SIGKILLed run leaves the previous
run's values and rows exactly as they were; a successful re-run replaces both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import xarray as xr
import yaml
from sqlalchemy import Engine

from pipelines.errors import StoreError
from pipelines.forecast.runner import run_forecast
from pipelines.forecast.store import ForecastStore, open_forecast_store
from schemas.forecast_config import ForecastConfig
from schemas.settings import Settings
from tests.pipelines.forecast.helpers import (
    forecast_config,
    make_model,
    make_store,
    run_rows,
    staging_leftovers,
    table_fingerprint,
)

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, xr.Dataset]:
    directory = tmp_path_factory.mktemp("atomic")
    dataset = make_store(directory / "analysis.zarr", times=60, n_lat=30, n_lon=45)
    model, _ = make_model(directory, dataset)
    return directory / "analysis.zarr", model, dataset


def _config(analysis: tuple[Path, Path, xr.Dataset], out: Path, run_id: str) -> ForecastConfig:
    store, model, _ = analysis
    return forecast_config(
        store,
        model,
        out,
        run_id=run_id,
        init_times={
            "kind": "range",
            "start": "2020-01-01T06:00Z",
            "end": "2020-01-02T11:00Z",
            "step_hours": 1,
        },
        lead_times={"max_hours": 24, "step_hours": 1},
        batch_size=1,
        concurrency=1,
    )


def _settings(engine: Engine) -> Settings:
    return Settings(database_url=engine.url.render_as_string(hide_password=False))


def _snapshot(out: Path, engine: Engine, run_id: str) -> tuple[xr.Dataset, list[tuple]]:
    return open_forecast_store(str(out)).load(), table_fingerprint(engine, run_id)


def _attempts(out: Path, run_id: str) -> list[Path]:
    return sorted((out / "runs").glob(f"{run_id}.*"))


def test_a_run_killed_mid_write_leaves_the_previous_run(
    tmp_path: Path, analysis: tuple[Path, Path, xr.Dataset], engine: Engine
) -> None:
    out = tmp_path / "forecast.zarr"
    settings = _settings(engine)
    first = run_forecast(_config(analysis, out, "first"), settings, engine)
    before, rows_before = _snapshot(out, engine, "first")
    assert before.attrs["run_id"] == "first" and len(rows_before) == first.rows

    config_path = tmp_path / "second.yaml"
    config_path.write_text(yaml.safe_dump(_config(analysis, out, "second").model_dump(mode="json")))
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.forecast", "--config", str(config_path)],
        cwd=ROOT,
        env=env,
        start_new_session=True,  # its own process group, killed whole below
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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

    after, rows_after = _snapshot(out, engine, "first")
    xr.testing.assert_identical(after, before)
    assert rows_after == rows_before
    assert run_rows(engine, "second") == (0, 0.0)
    assert ForecastStore(str(out)).current().run_id == "first"  # type: ignore[union-attr]

    again = run_forecast(_config(analysis, out, "second"), settings, engine)
    replaced = open_forecast_store(str(out))
    assert replaced.attrs["run_id"] == "second"
    assert run_rows(engine, "second")[0] == again.rows == first.rows
    np.testing.assert_array_equal(replaced.t2m.values, before.t2m.values)  # same inputs
    assert len(_attempts(out, "second")) == 1, "the killed attempt was not pruned"
    assert staging_leftovers(engine) == 0


def test_a_failing_run_keeps_the_previous_run_and_a_rerun_replaces_it(
    tmp_path: Path, analysis: tuple[Path, Path, xr.Dataset], engine: Engine
) -> None:
    out = tmp_path / "forecast.zarr"
    settings = _settings(engine)
    run_forecast(_config(analysis, out, "kept"), settings, engine)
    before, rows_before = _snapshot(out, engine, "kept")

    _, model, _ = analysis
    broken = tmp_path / "broken.zarr"
    make_store(broken, times=60, n_lat=30, n_lon=45)
    (broken / "t2m" / "1.0.0").write_bytes(b"not a blosc chunk")
    doomed = _config((broken, model, before), out, "kept")  # a re-run of the same id fails
    with pytest.raises(StoreError, match="cannot read the inputs"):
        run_forecast(doomed, settings, engine)
    after, rows_after = _snapshot(out, engine, "kept")
    xr.testing.assert_identical(after, before)
    assert rows_after == rows_before
    assert len(_attempts(out, "kept")) == 1, "the failed attempt's directory is left"

    run_forecast(_config(analysis, out, "kept"), settings, engine)
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
