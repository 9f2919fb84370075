"""Streaming mode on real parts: files dropped into a local or S3 prefix one initial time at a
time are ingested and forecast exactly once each; a rewritten file is processed again, a
corrupt one is reported and left alone until it changes, and a watcher killed with SIGKILL and
started again loses nothing and repeats nothing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from sqlalchemy import Engine, text

from pipelines.db import make_engine, migrate
from pipelines.ledger import RunLedger
from pipelines.ray_data import RayDataExecutor
from pipelines.watch import Watcher, load_setup
from schemas.settings import Settings
from schemas.watch_config import WatchConfig
from tests.fixtures.s3 import S3Server
from tests.helpers.processes import ROOT, job_env
from tests.helpers.synthetic import write_netcdf_files
from tests.pipelines.forecast.helpers import START, make_model, make_store

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]

N_LAT, N_LON, HISTORY_HOURS = 9, 12, 4
VARIABLES = ("t2m", "msl")
LEADS = [1, 2, 3]
ROWS_PER_INIT = len(LEADS) * len(VARIABLES) * N_LAT * N_LON
PATTERN = r"era5-(?P<time>\d{10})\.nc"


def hour(index: int) -> datetime:
    """The ``index``-th hour of the synthetic data (0 is START)."""
    return (pd.Timestamp(START, tz="UTC") + pd.Timedelta(hours=index)).to_pydatetime()


def netcdf_bytes(folder: Path, index: int, complevel: int | None = None) -> bytes:
    """The NetCDF file of one hour, as the store's synthetic data has it."""
    path = write_netcdf_files(
        folder / f"staging-{index}-{complevel}", 1, 1, VARIABLES, seed=3,
        start=hour(index).replace(tzinfo=None), lat=N_LAT, lon=N_LON, complevel=complevel,
    )[0]  # fmt: skip
    return path.read_bytes()


def file_name(index: int) -> str:
    return f"era5-{hour(index):%Y%m%d%H}.nc"


def drop(folder: Path, index: int, content: bytes) -> None:
    """Land one file at once, as a finished transfer does (write aside, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{file_name(index)}.part"
    partial.write_bytes(content)
    partial.replace(folder / file_name(index))


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A history of HISTORY_HOURS hours in the analysis store, a model, and config files."""
    dataset = make_store(tmp_path / "analysis.zarr", times=HISTORY_HOURS, seed=3)
    model, _ = make_model(tmp_path, dataset)
    ingest = {"store": {"url": str(tmp_path / "analysis.zarr")}, "ray": {"concurrency": 1}}
    forecast = {
        "analysis": str(tmp_path / "analysis.zarr"),
        "model": {"kind": "file", "path": str(model)},
        "init_times": {"kind": "latest"},
        "lead_times": LEADS,
        "device": "cpu",
        "batch_size": 1,
        "concurrency": 1,
        "output": {"zarr": {"url": str(tmp_path / "forecast.zarr")}},
    }
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    (tmp_path / "forecast.yaml").write_text(yaml.safe_dump(forecast))
    return {"root": tmp_path, "incoming": tmp_path / "incoming"}


def watch_config(root: Path, url: str) -> dict[str, Any]:
    return {
        "source": {
            "url": url,
            "pattern": PATTERN,
            "kind": "netcdf",
            "variables": list(VARIABLES),
        },
        "settle_seconds": 1,
        "poll_seconds": 0.2,
        "ingest": str(root / "ingest.yaml"),
        "forecast": str(root / "forecast.yaml"),
    }


def sqlite(root: Path) -> tuple[Engine, Settings]:
    url = f"sqlite:///{root / 'climate.db'}"
    engine = make_engine(url)
    migrate(engine)
    return engine, Settings(database_url=url)


def watcher(config: dict[str, Any], engine: Engine, settings: Settings) -> Watcher:
    setup = load_setup(WatchConfig.model_validate(config))
    return Watcher(setup, settings, engine, RayDataExecutor(concurrency=1))


def rows_per_init(engine: Engine) -> dict[datetime, tuple[int, int]]:
    """Initial time -> (forecast runs, rows) in the forecasts table."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT init_time, count(DISTINCT run_id), count(*) FROM forecasts "
                "GROUP BY init_time ORDER BY init_time"
            )
        ).all()
    found = {}
    for init, runs, count in rows:
        when = pd.Timestamp(init)
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
        found[when.to_pydatetime()] = (int(runs), int(count))
    return found


def key(index: int) -> str:
    return f"watch-{hour(index):%Y%m%d%H}"


def test_local_prefix_each_time_once_rewrite_again_corrupt_until_changed(
    world: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    root, incoming = world["root"], world["incoming"]
    engine, settings = sqlite(root)
    runs = RunLedger(engine)
    follow = watcher(watch_config(root, str(incoming)), engine, settings)
    first, second, bad = HISTORY_HOURS, HISTORY_HOURS + 1, HISTORY_HOURS + 2

    for index in (first, second):
        drop(incoming, index, netcdf_bytes(root, index))
        landed = time.monotonic()
        assert follow.run(max_cycles=1) == 1
        assert time.monotonic() - landed < 1 + 30  # settle + a bounded processing delay
        record = runs.get(key(index))
        assert record is not None and record.status == "succeeded", record
        assert list(record.summary["files"]) == [str(incoming / file_name(index))]
    assert rows_per_init(engine) == {hour(i): (1, ROWS_PER_INIT) for i in (first, second)}

    # nothing new: nothing runs, nothing is repeated
    assert follow.run(until_idle=1.0) == 0

    # the same values in other bytes (compressed): a new fingerprint, processed again, once
    before = runs.get(key(first))
    drop(incoming, first, netcdf_bytes(root, first, complevel=1))
    assert follow.run(max_cycles=1) == 1
    again = runs.get(key(first))
    assert before and again and again.status == "succeeded"
    assert again.started_at > before.started_at
    assert again.summary["files"] != before.summary["files"]
    assert rows_per_init(engine) == {hour(i): (1, ROWS_PER_INIT) for i in (first, second)}

    # a corrupt file: reported (WARNING with the reason and the fix), recorded failed, and not
    # retried while it stays the same
    caplog.set_level(logging.WARNING, logger="pipelines.watch")
    drop(incoming, bad, b"CDF\x01 this is not a complete NetCDF file")
    assert follow.run(max_cycles=1) == 1
    failed = runs.get(key(bad))
    assert failed and failed.status == "failed" and file_name(bad) in (failed.error or "")
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(file_name(bad) in m and "fix or replace the file" in m for m in warning), warning
    assert follow.run(until_idle=1.5) == 0
    assert runs.get(key(bad)) == failed  # not started again

    # fixed: retried once, and the stream goes on
    drop(incoming, bad, netcdf_bytes(root, bad))
    assert follow.run(max_cycles=1) == 1
    fixed = runs.get(key(bad))
    assert fixed and fixed.status == "succeeded"
    assert rows_per_init(engine) == {hour(i): (1, ROWS_PER_INIT) for i in (first, second, bad)}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.db)])
def ledger(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_database_factory: Callable[[], str],
) -> Iterator[tuple[Engine, Settings]]:
    """A migrated ledger on SQLite or on a PostgreSQL database of its own (the forecasts
    table gets partitions at run time: the suite's shared database stays untouched)."""
    if request.param == "sqlite":
        engine, settings = sqlite(tmp_path)
    else:
        url = postgres_database_factory()
        engine, settings = make_engine(url), Settings(database_url=url)
        migrate(engine)
    yield engine, settings
    engine.dispose()


@pytest.mark.s3
def test_s3_prefix_each_time_once(
    world: dict[str, Path], s3_env: S3Server, ledger: tuple[Engine, Settings]
) -> None:
    root = world["root"]
    engine, _ = ledger
    settings = Settings(database_url=ledger[1].database_url)  # with the moto S3 environment
    client = s3_env.client()
    bucket = "watch"
    if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=bucket)
    prefix = f"incoming/{root.name}/"
    follow = watcher(watch_config(root, f"s3://{bucket}/{prefix}"), engine, settings)
    runs = RunLedger(engine)
    first, second = HISTORY_HOURS, HISTORY_HOURS + 1
    for index in (first, second):
        client.put_object(
            Bucket=bucket, Key=prefix + file_name(index), Body=netcdf_bytes(root, index)
        )
        assert follow.run(max_cycles=1) == 1
        record = runs.get(key(index))
        assert record is not None and record.status == "succeeded", record
        assert list(record.summary["files"]) == [f"s3://{bucket}/{prefix}{file_name(index)}"]
        assert next(iter(record.summary["files"].values())).startswith("etag:")
    # the same bytes again: the same ETag, nothing to do; other bytes: processed again
    client.put_object(Bucket=bucket, Key=prefix + file_name(first), Body=netcdf_bytes(root, first))
    assert follow.run(until_idle=1.0) == 0
    body = netcdf_bytes(root, first, complevel=1)
    client.put_object(Bucket=bucket, Key=prefix + file_name(first), Body=body)
    assert follow.run(max_cycles=1) == 1
    assert rows_per_init(engine) == {hour(i): (1, ROWS_PER_INIT) for i in (first, second)}


def start_watcher(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m jobs.watch`` in its own process group, its output in ``log``."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.watch", "--config", str(config)],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout} s; watcher log:\n{log.read_text()}")


def status(runs: RunLedger, run_id: str) -> str | None:
    record = runs.get(run_id)
    return record.status if record else None


def test_killed_watcher_restarts_where_it_stopped(world: dict[str, Path]) -> None:
    root, incoming = world["root"], world["incoming"]
    engine, settings = sqlite(root)
    runs = RunLedger(engine)
    config = root / "watch.yaml"
    config.write_text(yaml.safe_dump(watch_config(root, str(incoming))))
    env = job_env(DATABASE_URL=settings.database_url)
    log = root / "watch.log"
    first, second, third = HISTORY_HOURS, HISTORY_HOURS + 1, HISTORY_HOURS + 2

    process = start_watcher(config, env, log)
    try:
        drop(incoming, first, netcdf_bytes(root, first))
        wait_for(lambda: status(runs, key(first)) == "succeeded", "the first cycle", log)
        done_first = runs.get(key(first))
        drop(incoming, second, netcdf_bytes(root, second))
        wait_for(lambda: status(runs, key(second)) == "running", "the second cycle's start", log)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    drop(incoming, third, netcdf_bytes(root, third))  # lands while no watcher runs

    process = start_watcher(config, env, log)
    try:
        for index in (second, third):
            wait_for(lambda i=index: status(runs, key(i)) == "succeeded", f"cycle {index}", log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert runs.get(key(first)) == done_first  # not run again
    expected = {hour(i): (1, ROWS_PER_INIT) for i in (first, second, third)}
    assert rows_per_init(engine) == expected
    with engine.connect() as conn:
        watch_runs = conn.execute(
            text("SELECT run_id, status FROM runs WHERE kind = 'watch' ORDER BY run_id")
        ).all()
    assert [tuple(r) for r in watch_runs] == [(key(i), "succeeded") for i in (first, second, third)]


def test_config_refuses_a_pattern_without_time_and_unknown_keys(world: dict[str, Path]) -> None:
    config = watch_config(world["root"], str(world["incoming"]))
    with pytest.raises(ValueError, match="no named group `time`"):
        WatchConfig.model_validate({**config, "source": {**config["source"], "pattern": "x"}})
    with pytest.raises(ValueError, match="settle_secs"):
        WatchConfig.model_validate({**config, "settle_secs": 1})
    with pytest.raises(ValueError, match=r"does not contain \{time\}"):
        WatchConfig.model_validate({**config, "marker": "done"})


def test_expected_files_and_marker_declare_complete_at_once(world: dict[str, Path]) -> None:
    root, incoming = world["root"], world["incoming"]
    engine, settings = sqlite(root)
    slow = {**watch_config(root, str(incoming)), "settle_seconds": 3600}
    drop(incoming, HISTORY_HOURS, b"bytes")
    assert watcher(slow, engine, settings).due() == []
    counted = watcher({**slow, "expected_files": 1}, engine, settings).due()
    assert [g.init_time for g in counted] == [hour(HISTORY_HOURS)]
    marked = watcher({**slow, "marker": "era5-{time}.done"}, engine, settings)
    assert marked.due() == [] and marked.pending == 1
    (incoming / f"era5-{hour(HISTORY_HOURS):%Y%m%d%H}.done").touch()
    assert [g.key for g in marked.due()] == [key(HISTORY_HOURS)]


def test_run_cut_off_after_its_forecast_committed_is_not_redone(world: dict[str, Path]) -> None:
    root, incoming = world["root"], world["incoming"]
    engine, settings = sqlite(root)
    runs = RunLedger(engine)
    drop(incoming, HISTORY_HOURS, b"bytes")
    follow = watcher({**watch_config(root, str(incoming)), "settle_seconds": 0}, engine, settings)
    [group] = follow.due()
    # the watcher was killed between the forecast's commit and its own record
    runs.start("watch", {"files": group.files}, group.key)
    runs.start("forecast", {}, f"{group.key}-forecast")
    runs.finish(f"{group.key}-forecast", "succeeded", {"rows": ROWS_PER_INIT})
    restarted = watcher(
        {**watch_config(root, str(incoming)), "settle_seconds": 0}, engine, settings
    )
    assert restarted.due() == []
    record = runs.get(group.key)
    assert record and record.status == "succeeded" and record.summary["recovered"] is True
