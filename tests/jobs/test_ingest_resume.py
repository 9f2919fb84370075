"""A run killed halfway (SIGKILL to its whole process group) and started again finishes the job,
skipping what was committed, and leaves the same store as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from sqlalchemy import create_engine, text

from tests.conftest import ROOT

FILES, TIMES_PER_FILE = 40, 12

pytestmark = pytest.mark.slow


def write_inputs(folder: Path) -> None:
    rng = np.random.default_rng(7)
    lat = np.linspace(90, -90, 181)
    lon = np.arange(-180, 180, 1.0)
    base = 250 + 40 * np.cos(np.deg2rad(lat))[:, None] * np.ones((1, lon.size))
    for index in range(FILES):
        times = pd.date_range("2021-01-01", periods=FILES * TIMES_PER_FILE, freq="h")
        times = times[index * TIMES_PER_FILE : (index + 1) * TIMES_PER_FILE]
        noise = rng.normal(0, 1, (TIMES_PER_FILE, lat.size, lon.size))
        values = (base[None] + noise).astype("float32")
        xr.Dataset(
            {"t2m": (("time", "latitude", "longitude"), values, {"units": "K"})},
            coords={"time": times, "latitude": lat, "longitude": lon},
        ).to_netcdf(folder / f"part-{index:03d}.nc")


def write_config(path: Path, inputs: Path, store: Path) -> Path:
    config = {
        "source": {"kind": "netcdf", "urls": [str(inputs)], "variables": ["t2m"]},
        "store": {"url": str(store), "chunks": {"time": TIMES_PER_FILE}},
        "ray": {"num_cpus": 1, "concurrency": 1},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def ingest_process(config: Path, database: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.ingest", "--config", str(config)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def committed(database: Path) -> int:
    if not database.exists():
        return 0
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM ingest_files WHERE status = 'committed'")
                ).scalar_one()
            )
    except Exception:  # the tables may not exist yet
        return 0
    finally:
        engine.dispose()


def last_run_summary(database: Path) -> dict[str, object]:
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        raw = connection.execute(
            text("SELECT summary FROM runs ORDER BY started_at DESC LIMIT 1")
        ).scalar_one()
    engine.dispose()
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def store_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode() + item.read_bytes())
    return digest.hexdigest()


def test_killed_run_resumes_to_the_same_store(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_inputs(inputs)

    reference = write_config(tmp_path / "ref.yaml", inputs, tmp_path / "ref.zarr")
    process = ingest_process(reference, tmp_path / "ref.db")
    assert process.wait(timeout=600) == 0, process.stderr.read().decode() if process.stderr else ""

    config = write_config(tmp_path / "run.yaml", inputs, tmp_path / "run.zarr")
    database = tmp_path / "run.db"
    process = ingest_process(config, database)
    deadline = time.monotonic() + 300
    while committed(database) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    done_before = committed(database)
    assert 3 <= done_before < FILES, f"kill landed at {done_before} committed files"

    process = ingest_process(config, database)
    assert process.wait(timeout=600) == 0, process.stderr.read().decode() if process.stderr else ""
    assert committed(database) == FILES
    assert last_run_summary(database)["files_skipped"] == done_before
    assert store_digest(tmp_path / "run.zarr") == store_digest(tmp_path / "ref.zarr")
    resumed = xr.open_zarr(tmp_path / "run.zarr")
    assert resumed.sizes["time"] == FILES * TIMES_PER_FILE
