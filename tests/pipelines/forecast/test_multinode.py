"""Two Ray nodes (a ``Cluster`` in a subprocess): the work spreads, results equal one node's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from pipelines.db import make_engine, migrate
from pipelines.forecast.runner import run_forecast
from pipelines.forecast.store import open_forecast_store
from schemas.settings import Settings
from tests.pipelines.forecast.helpers import (
    forecast_config,
    make_model,
    make_store,
    run_rows,
    table_fingerprint,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_two_nodes_share_the_work_and_agree_with_one(tmp_path: Path) -> None:
    dataset = make_store(tmp_path / "analysis.zarr")
    model, _ = make_model(tmp_path, dataset)
    init_times = {
        "kind": "range",
        "start": "2020-01-01T06:00Z",
        "end": "2020-01-02T12:00Z",
        "step_hours": 3,
    }

    two = forecast_config(
        tmp_path / "analysis.zarr",
        model,
        tmp_path / "two.zarr",
        run_id="two-nodes",
        init_times=init_times,
        batch_size=1,
        concurrency=2,
    )
    config_path = tmp_path / "two.json"
    config_path.write_text(two.model_dump_json())
    two_db = f"sqlite:///{tmp_path / 'two.db'}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.pipelines.forecast.two_nodes",
            str(config_path),
            two_db,
            str(tmp_path / "summary.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cluster_nodes"] == 2
    assert len(summary["nodes"]) == 2, f"all work ran on {summary['nodes']}"

    one_db = f"sqlite:///{tmp_path / 'one.db'}"
    one_engine = make_engine(one_db)
    migrate(one_engine)
    one = two.model_copy(
        update={
            "run_id": "two-nodes",
            "concurrency": 1,
            "output": two.output.model_copy(
                update={
                    "zarr": two.output.zarr.model_copy(update={"url": str(tmp_path / "one.zarr")})
                }
            ),
        }
    )
    single = run_forecast(one, Settings(database_url=one_db), one_engine)
    assert len(single.nodes) == 1
    assert single.checksum == summary["checksum"]
    assert single.rows == summary["rows"]

    two_engine = make_engine(two_db)
    assert run_rows(two_engine, "two-nodes") == run_rows(one_engine, "two-nodes")
    assert table_fingerprint(two_engine, "two-nodes") == table_fingerprint(one_engine, "two-nodes")
    two_store, one_store = (
        open_forecast_store(str(tmp_path / "two.zarr")),
        open_forecast_store(str(tmp_path / "one.zarr")),
    )
    for name in one_store.data_vars:
        xr.testing.assert_identical(two_store[name], one_store[name])
