"""The nightly job on real parts: one set of rows per date however often it runs, a SIGKILLed
run re-run to the rows of an undisturbed one, a night without data failing visibly after its
wait, a candidate that fails the gate left unpromoted."""

from __future__ import annotations

import os
import signal
import time
from datetime import date
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, text

from pipelines.errors import SourceError
from pipelines.ledger import RunLedger
from pipelines.models.registry import ModelRegistry
from pipelines.nightly import run_nightly
from pipelines.ray_data import RayDataExecutor
from schemas.nightly_config import NightlyConfig
from schemas.settings import Settings
from tests.helpers.models import make_linear_model
from tests.helpers.processes import job_env, start_module
from tests.helpers.synthetic import write_netcdf_files
from tests.pipelines.forecast.helpers import run_rows, table_fingerprint

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]
DAY1, DAY2 = date(2020, 1, 1), date(2020, 1, 2)
GRID = {"lat": 9, "lon": 12}


def _write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _setup(root: Path, days: int = 2) -> NightlyConfig:
    """Daily NetCDF files under root/incoming/YYYYMMDD.nc, a linear model, the four configs."""
    incoming = root / "incoming"
    files = write_netcdf_files(incoming, days, 24, ("t2m",), seed=5, start="2020-01-01", **GRID)
    for number, path in enumerate(files):
        path.rename(incoming / f"202001{number + 1:02d}.nc")
    from tests.helpers.synthetic import synthetic_dataset

    grid = synthetic_dataset(1, ("t2m",), **GRID)
    model = root / "model.onnx"
    make_linear_model(model, grid.lat.values, grid.lon.values, history=2, a=0.8, b=0.2)
    store = str(root / "analysis.zarr")
    ingest = {"source": {"kind": "netcdf", "urls": ["unused"], "variables": ["t2m"]},
              "store": {"url": store}}  # fmt: skip
    forecast = {
        "analysis": store,
        "model": {"kind": "file", "path": str(model)},
        "init_times": {"kind": "latest", "count": 1},
        "lead_times": {"max_hours": 6, "step_hours": 3},
        "device": "cpu",
        "concurrency": 1,
        "output": {"zarr": {"url": str(root / "forecast.zarr"), "keep_runs": 5}},
    }
    evaluate = {
        "analysis": store,
        "model": {"kind": "file", "path": str(model)},
        "split": {"held_out": {"start": "2020-01-02T00:00:00Z"}},
        "lead_hours": [1, 3, 6, 12, 24],
        "report": {"dir": str(root / "report")},
    }
    return NightlyConfig.model_validate(
        {
            "source": {"urls": [str(incoming / "{date:%Y%m%d}.nc")]},
            "init_hours": [6, 18],
            "ingest": _write_yaml(root / "ingest.yaml", ingest),
            "forecast": _write_yaml(root / "forecast.yaml", forecast),
            "evaluate": _write_yaml(root / "evaluate.yaml", evaluate),
            "wait": {"timeout_minutes": 0.02, "poll_seconds": 0.2},
            "retries": {"attempts": 2, "backoff_seconds": 0.1},
            "verification_report": str(root / "verification"),
        }
    )


def _settings(engine: Engine, root: Path) -> Settings:
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        model_registry_url=str(root / "registry"),
    )


def _count(engine: Engine, table: str, run_id: str) -> int:
    with engine.connect() as conn:
        query = text(f"SELECT count(*) FROM {table} WHERE run_id LIKE :r")
        return int(conn.execute(query, {"r": run_id}).scalar_one())


def test_two_runs_for_one_date_leave_one_set_of_rows(tmp_path: Path, engine: Engine) -> None:
    config = _setup(tmp_path)
    settings = _settings(engine, tmp_path)
    first = run_nightly(config, DAY1, settings, engine, RayDataExecutor())
    rows = table_fingerprint(engine, "nightly-2020-01-01-forecast")
    assert len(rows) == 2 * 2 * 9 * 12  # two initial times, two leads, one variable
    assert [t.hour for t in first.cycle.init_times] == [6, 18]
    assert first.verified_rows > 0  # the 06 UTC run's leads fall inside the day
    second = run_nightly(config, DAY1, settings, engine, RayDataExecutor())
    assert table_fingerprint(engine, "nightly-2020-01-01-forecast") == rows
    assert second.verified_rows == first.verified_rows
    assert _count(engine, "verification_scores", "nightly-2020-01-01%") == first.verified_rows
    assert _count(engine, "runs", "nightly-2020-01-01") == 1
    record = RunLedger(engine).get("nightly-2020-01-01")
    assert record is not None and record.status == "succeeded"
    assert (tmp_path / "verification" / "verification.png").is_file()


def test_a_night_without_data_waits_then_fails_visibly(tmp_path: Path, engine: Engine) -> None:
    config = _setup(tmp_path, days=1)
    naps: list[float] = []
    with pytest.raises(SourceError, match=r"0 of at least 1 .* 2020-01-05 after waiting"):
        run_nightly(config, date(2020, 1, 5), _settings(engine, tmp_path), engine,
                    RayDataExecutor(), sleep=naps.append)  # fmt: skip
    assert naps, "it did not wait"
    record = RunLedger(engine).get("nightly-2020-01-05")
    assert record is not None and record.status == "failed"
    assert record.error is not None and "after waiting" in record.error


def test_a_candidate_that_fails_the_gate_is_not_promoted(tmp_path: Path, engine: Engine) -> None:
    config = _setup(tmp_path)
    settings = _settings(engine, tmp_path)
    registry = ModelRegistry(engine, settings.model_registry_url, cache=tmp_path / "cache")
    from tests.helpers.synthetic import synthetic_dataset

    grid = synthetic_dataset(1, ("t2m",), **GRID)
    bad = tmp_path / "bad" / "model.onnx"
    bad.parent.mkdir()
    card = make_linear_model(bad, grid.lat.values, grid.lon.values, a=0.3, b=0.0, name="bad")
    registry.register(bad)
    run_nightly(config, DAY1, settings, engine, RayDataExecutor())  # the history day
    named = {**config.model_dump(), "candidate": {"name": "bad", "version": card.version}}
    candidate = NightlyConfig.model_validate(named)
    result = run_nightly(candidate, DAY2, settings, engine, RayDataExecutor())
    assert result.candidate is not None and result.candidate["promoted"] is False
    assert "was not promoted" in str(result.candidate["reason"])
    assert registry.get(card.name, card.version).status == "candidate"
    assert registry.promoted("bad") is None


def test_a_killed_run_rerun_gives_the_rows_of_an_undisturbed_one(tmp_path: Path) -> None:
    from pipelines.db import make_engine, migrate

    rows = {}
    for name in ("calm", "killed"):
        root = tmp_path / name
        root.mkdir()
        config = _setup(root)
        engine = make_engine(f"sqlite:///{root / 'climate.db'}")
        migrate(engine)
        settings = _settings(engine, root)
        run_nightly(config, DAY1, settings, engine, RayDataExecutor())
        if name == "killed":
            path = _write_yaml(root / "nightly.yaml", config.model_dump(mode="json"))
            env = job_env(DATABASE_URL=settings.database_url)
            driver = start_module(["jobs.nightly", "--config", path, "--date", "2020-01-02"], env)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and driver.poll() is None:
                if list((root / "forecast.zarr" / "runs").glob("nightly-2020-01-02-forecast.*")):
                    break
                time.sleep(0.01)
            assert driver.poll() is None, "the nightly ended before its forecast began"
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
            record = RunLedger(engine).get("nightly-2020-01-02")
            assert record is not None and record.status == "running"  # killed, not finished
            time.sleep(1)
        run_nightly(config, DAY2, settings, engine, RayDataExecutor())
        rows[name] = table_fingerprint(engine, "nightly-2020-01-02-forecast")
        assert run_rows(engine, "nightly-2020-01-02-forecast")[0] == len(rows[name])
        assert RunLedger(engine).get("nightly-2020-01-02").status == "succeeded"  # type: ignore[union-attr]
        engine.dispose()
    assert rows["killed"] == rows["calm"] and rows["calm"]


def test_transient_failures_are_retried_with_backoff_then_raised() -> None:
    from pipelines.errors import ConfigError, SinkError
    from pipelines.nightly import retrying
    from schemas.nightly_config import RetryPolicy

    calls: list[int] = []
    naps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SinkError("database gone for a moment")
        return "done"

    policy = RetryPolicy(attempts=3, backoff_seconds=0.5)
    assert retrying("step", policy, flaky, naps.append) == "done"
    assert naps == [0.5, 1.0]  # exponential backoff
    calls.clear()
    with pytest.raises(SinkError):
        retrying("step", RetryPolicy(attempts=2, backoff_seconds=0), flaky, naps.append)
    assert len(calls) == 2

    def wrong() -> None:
        calls.append(1)
        raise ConfigError("not transient")

    calls.clear()
    with pytest.raises(ConfigError):
        retrying("step", policy, wrong, naps.append)
    assert len(calls) == 1  # not retried
