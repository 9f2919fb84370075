"""Shared helpers of the forecast tests: small analysis stores, configs, a bare reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
import xarray as xr
from sqlalchemy import Engine, text

from pipelines.analysis_store import AnalysisStore
from pipelines.models.runtime import ModelRuntime
from pipelines.store_layout import layout_of
from schemas.config import ChunkSpec, Compression
from schemas.forecast_config import ForecastConfig
from schemas.model_card import ModelCard
from tests.helpers.models import make_linear_model
from tests.helpers.synthetic import synthetic_dataset

START = "2020-01-01"
N_LAT, N_LON = 9, 12


def make_store(
    path: Path,
    times: int = 60,
    variables: tuple[str, ...] = ("t2m", "msl"),
    n_lat: int = N_LAT,
    n_lon: int = N_LON,
    seed: int = 3,
    time_chunk: int = 24,
) -> xr.Dataset:
    """A canonical analysis store of seeded synthetic fields; returns the dataset written."""
    dataset = synthetic_dataset(times, variables, lat=n_lat, lon=n_lon, seed=seed, start=START)
    store = AnalysisStore(str(path))
    store.create(layout_of(dataset), dataset.time.values, ChunkSpec(time=time_chunk), Compression())
    store.write({name: dataset[name].values for name in variables}, 0)
    return dataset


def make_model(
    directory: Path, dataset: xr.Dataset, history: int = 2, **kwargs: Any
) -> tuple[Path, ModelCard]:
    """A linear model with a diurnal term on the dataset's grid."""
    variables = kwargs.pop("variables", tuple(dataset.data_vars))
    rng = np.random.default_rng(7)
    clim = rng.normal(0, 0.1, (24, len(variables), 1, 1)).astype(np.float32)
    path = directory / "model.onnx"
    card = make_linear_model(
        path,
        dataset.lat.values,
        dataset.lon.values,
        variables=variables,
        history=history,
        a=0.7,
        b=0.3,
        clim=clim,
        **kwargs,
    )
    return path, card


def forecast_config(store: Path, model: Path, out: Path, **overrides: Any) -> ForecastConfig:
    data: dict[str, Any] = {
        "analysis": str(store),
        "model": {"path": str(model)},
        "init_times": {
            "kind": "range",
            "start": "2020-01-01T06:00Z",
            "end": "2020-01-02T06:00Z",
            "step_hours": 6,
        },
        "lead_times": {"max_hours": 12, "step_hours": 3},
        "device": "cpu",
        "batch_size": 2,
        "concurrency": 2,
        "output": {"zarr": {"url": str(out)}},
    }
    data.update(overrides)
    return ForecastConfig.model_validate(data)


def bare_forecast(
    model: Path, card: ModelCard, dataset: xr.Dataset, inits: np.ndarray, leads: list[int]
) -> np.ndarray:
    """The reference: [init, lead, channel, lat, lon] from a plain loop over the dataset."""
    runtime = ModelRuntime.load(model, card, "cpu", threads=1)
    seconds = dataset.time.values.astype("datetime64[s]").astype("int64")
    values = np.stack([dataset[v].values for v in card.inputs.variables], axis=1)
    out = []
    for init in inits:
        pos = int(np.searchsorted(seconds, init))
        history = values[pos - card.inputs.history + 1 : pos + 1][None]
        steps = max(leads)
        full = runtime.rollout(history, np.array([(init // 3600) % 24]), steps)
        out.append(full[0, [lead - 1 for lead in leads]])
    return np.stack(out)


def run_rows(engine: Engine, run_id: str) -> tuple[int, float]:
    """(count, sum of values) of a run's rows in the forecasts table."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*), sum(CAST(value AS DOUBLE PRECISION)) "
                "FROM forecasts WHERE run_id = :r"
            ),
            {"r": run_id},
        ).one()
    return int(row[0]), float(row[1] or 0.0)


def table_fingerprint(engine: Engine, run_id: str) -> list[tuple[Any, ...]]:
    """Every row of a run, sorted, with values rounded to float32 precision."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT init_time, lead_hours, valid_time, variable, lat, lon, value "
                "FROM forecasts WHERE run_id = :r "
                "ORDER BY init_time, lead_hours, variable, lat DESC, lon"
            ),
            {"r": run_id},
        ).all()
    return [tuple(r) for r in rows]


def staging_leftovers(engine: Engine) -> int:
    """Staging tables (PostgreSQL) or staged rows (SQLite) still present."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_class WHERE relkind = 'r' "
                        "AND relname LIKE 'fcs%' AND NOT relispartition"
                    )
                ).scalar_one()
            )
        return int(conn.execute(text("SELECT count(*) FROM forecasts_staging")).scalar_one())


def psycopg_url(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def terminate(engine: Engine, application: str) -> int:
    """pg_terminate_backend every backend of that application name; returns how many."""
    with psycopg.connect(psycopg_url(engine), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application,),
        ).fetchall()
    return len(rows)


def make_inputs(
    directory: Path, times: int, n_lat: int, n_lon: int
) -> tuple[Path, Path, xr.Dataset]:
    """An analysis store and a model on its grid: (store path, model path, dataset)."""
    dataset = make_store(directory / "analysis.zarr", times=times, n_lat=n_lat, n_lon=n_lon)
    model, _ = make_model(directory, dataset)
    return directory / "analysis.zarr", model, dataset


def hourly_config(
    store: Path, model: Path, out: Path, run_id: str, end: str, lead_step: int
) -> ForecastConfig:
    """Hourly initial times from 2020-01-01T06:00Z to ``end``, leads to 24 h, one actor taking
    one initial time at a time: a run slow enough to be disturbed midway."""
    return forecast_config(
        store,
        model,
        out,
        run_id=run_id,
        init_times={"kind": "range", "start": "2020-01-01T06:00Z", "end": end, "step_hours": 1},
        lead_times={"max_hours": 24, "step_hours": lead_step},
        batch_size=1,
        concurrency=1,
    )


ACTOR_TITLE = "ray::MapWorker(MapBatches(ForecastWorker))"


def actor_pids() -> list[int]:
    """Forecast actors running in this process's local Ray (its raylet is our child)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith(ACTOR_TITLE):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found
