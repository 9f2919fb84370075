"""Seeded synthetic forecast runs written with the real forecast store code, for the serve tests
and benches: :class:`~pipelines.forecast.zarr_sink.RunArrays` writes the run's Zarr store and
:meth:`~pipelines.forecast.store.ForecastStore.publish` commits it, as ``run_forecast`` does,
without an analysis store or a model rollout (fast at any grid size)."""

from __future__ import annotations

import uuid

import numpy as np

from pipelines.forecast.store import ForecastStore
from pipelines.forecast.zarr_sink import RunArrays
from schemas.model_card import ModelCard

INIT = "2020-01-02T06:00"


def global_axes(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """A regular global grid in the canonical orientation: lat 90..-90, lon [-180, 180)."""
    lat = np.linspace(90.0, -90.0, n_lat)
    lon = -180.0 + (360.0 / n_lon) * np.arange(n_lon)
    return lat, lon


def write_run(
    url: str,
    card: ModelCard,
    leads: int = 24,
    run_id: str | None = None,
    seed: int = 0,
    init: str = INIT,
) -> str:
    """Write and commit one run of one initial time, lead times 1..``leads`` h; its run id.

    Values are smooth seeded fields near 288 K (a latitude profile, a diurnal wave and noise)
    for every output variable of ``card`` on the card's grid.
    """
    run_id = run_id or f"synthetic-{uuid.uuid4().hex[:8]}"
    attempt = uuid.uuid4().hex[:8]
    store = ForecastStore(url)
    arrays = RunArrays(store.run_url(run_id, attempt))
    init_seconds = np.array([np.datetime64(init, "s").astype(np.int64)])
    lead_hours = tuple(range(1, leads + 1))
    model = {"name": card.name, "version": card.version, "sha256": card.sha256}
    arrays.create(card, init_seconds, lead_hours, {"run_id": run_id, "model": model})
    lat = np.asarray(card.inputs.grid.lat)
    lon = np.asarray(card.inputs.grid.lon)
    rng = np.random.default_rng(seed)
    channels = len(card.outputs.variables) * max(1, len(card.inputs.levels))
    hours = np.arange(1, leads + 1)[:, None, None]
    base = 288.0 - 30.0 * np.sin(np.deg2rad(lat))[None, :, None] ** 2
    forecasts = np.empty((1, leads, channels, len(lat), len(lon)), dtype=np.float32)
    for c in range(channels):
        wave = 5.0 * np.sin(2 * np.pi * hours / 24 + np.deg2rad(lon)[None, None, :])
        noise = rng.normal(0.0, 0.5, (leads, len(lat), len(lon)))
        forecasts[0, :, c] = base + wave + noise
    arrays.write(np.array([0]), forecasts, card)
    arrays.finish({"checksum": float(forecasts.sum(dtype=np.float64))})
    store.publish(run_id, attempt, keep_runs=2)
    return run_id
