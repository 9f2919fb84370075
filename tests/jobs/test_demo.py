"""``make demo``'s job, end to end in a scratch directory: ingest the bundled sample, register
the shipped model, evaluate it, promote it through the gate, forecast from the promoted version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from pipelines.db import make_engine
from pipelines.forecast import open_forecast_store
from pipelines.models.artefacts import load_card
from tests.helpers.processes import ROOT, job_env, run_module

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]


def test_the_demo_runs_the_registry_path_end_to_end(tmp_path: Path, database_url: str) -> None:
    for folder in ("configs", "models", "data/sample"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = job_env(
        RAY_ADDRESS=None,  # its own local Ray, as `make demo` starts (workers in its directory)
        CLIMATE_CACHE_DIR=str(tmp_path / "cache"),
        DATABASE_URL=database_url,  # a fresh SQLite file or PostgreSQL database
        MODEL_REGISTRY_URL=None,  # the default: output/registry in the scratch directory
    )
    result = run_module(["jobs.demo"], env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stderr
    card = load_card(ROOT / "models/t2m-resconv/model.card.json")
    assert f"{card.name} {card.version}: candidate" in out
    assert "promotion gate: passes" in out
    assert f"{card.name} {card.version}: promoted" in out
    assert "succeeded" in out

    engine = make_engine(database_url)
    with engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM models WHERE name = :n AND version = :v"),
            {"n": card.name, "v": card.version},
        ).scalar_one()
        rows = conn.execute(
            text("SELECT count(*) FROM forecasts WHERE model_sha256 = :s"), {"s": card.sha256}
        ).scalar_one()
    assert status == "promoted"
    forecast = open_forecast_store(str(tmp_path / "output/forecast.zarr"))
    assert forecast.attrs["model"]["sha256"] == card.sha256
    assert rows == forecast.t2m.size > 0
