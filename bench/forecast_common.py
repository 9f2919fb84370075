"""Shared bench helpers: synthetic analysis stores and forecast configs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipelines.analysis_store import AnalysisStore
from pipelines.store_layout import layout_of
from schemas.config import ChunkSpec, Compression
from schemas.forecast_config import ForecastConfig

START = "2020-01-01"


def smooth_store(
    path: Path, times: int, n_lat: int, n_lon: int, seed: int = 0, time_chunk: int = 24
) -> xr.Dataset:
    """A canonical t2m store of cheap seeded smooth fields (fast at any resolution)."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(90.0, -90.0, n_lat)
    lon = -180.0 + (360.0 / n_lon) * np.arange(n_lon)
    base = 288.0 - 30.0 * np.sin(np.deg2rad(lat))[:, None] ** 2 + 0 * lon[None, :]
    template = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), np.zeros((1, n_lat, n_lon), "float32"), {"units": "K"})},
        coords={
            "time": np.array([np.datetime64(START, "ns")]),
            "lat": ("lat", lat),
            "lon": ("lon", lon),
        },
    )
    store = AnalysisStore(str(path))
    axis = np.datetime64(START, "ns") + np.arange(times) * np.timedelta64(1, "h")
    store.create(layout_of(template), axis, ChunkSpec(time=time_chunk), Compression())
    for start in range(0, times, time_chunk):
        n = min(time_chunk, times - start)
        hours = np.arange(start, start + n)[:, None, None]
        wave = 5.0 * np.sin(2 * np.pi * hours / 24 + np.deg2rad(lon)[None, None, :])
        noise = rng.normal(0, 0.5, (n, n_lat, n_lon))
        store.write({"t2m": (base[None] + wave + noise).astype("float32")}, start)
    return xr.open_zarr(path)


def forecast_config(
    store: Path, model: Path, out: Path, inits: int, leads: int, **extra: Any
) -> ForecastConfig:
    return ForecastConfig.model_validate(
        {
            "analysis": str(store),
            "model": {"path": str(model)},
            "init_times": {
                "kind": "range",
                "start": f"{START}T02:00Z",
                "end": str(np.datetime64(f"{START}T02:00") + np.timedelta64(inits - 1, "h")) + "Z",
                "step_hours": 1,
            },
            "lead_times": {"max_hours": leads, "step_hours": 1},
            "device": "cpu",
            "output": {"zarr": {"url": str(out)}, "write_sql": False},
            **extra,
        }
    )


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
