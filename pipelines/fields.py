"""The analysis store as one in-memory array of model channels, and time-period masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import xarray as xr

from pipelines.errors import SchemaError, StoreError
from pipelines.models.compatibility import check_dataset
from schemas.model_card import ModelCard
from schemas.train_config import TimeRange

HOUR_S = 3600


@dataclass(frozen=True)
class Fields:
    """Hourly fields of the model's channels.

    ``values`` is float32 [time, channel, lat, lon]; ``times`` datetime64[ns] UTC, hourly and
    contiguous; ``channel_names`` like ``t2m`` or ``t@500``.
    """

    values: np.ndarray
    times: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    channel_names: tuple[str, ...]

    @property
    def hours(self) -> np.ndarray:
        """Hour of day (UTC) of every time, int64."""
        return hour_of_day(self.times)

    def mask(self, periods: Sequence[TimeRange]) -> np.ndarray:
        """Boolean [time]: inside any of ``periods``."""
        return period_mask(self.times, periods)


def hour_of_day(times: np.ndarray) -> np.ndarray:
    """Hour of day (UTC, int64) of datetime64 values."""
    seconds = np.asarray(times).astype("datetime64[s]").astype(np.int64)
    return (seconds // HOUR_S) % 24


def _as_datetime64(value: datetime) -> np.datetime64:
    return np.datetime64(value.replace(tzinfo=None), "ns")


def period_mask(times: np.ndarray, periods: Sequence[TimeRange]) -> np.ndarray:
    """Boolean [time]: ``start <= t < end`` for any of ``periods`` (open bounds are unlimited)."""
    times = np.asarray(times, dtype="datetime64[ns]")
    mask = np.zeros(times.shape, dtype=bool)
    for period in periods:
        inside = np.ones(times.shape, dtype=bool)
        if period.start is not None:
            inside &= times >= _as_datetime64(period.start)
        if period.end is not None:
            inside &= times < _as_datetime64(period.end)
        mask |= inside
    return mask


def split_masks(
    times: np.ndarray, held_out: TimeRange, train: Sequence[TimeRange] | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held_out)`` masks; train defaults to every time outside the held-out period.

    Raises
    ------
    SchemaError
        Either period holds no time of the store.
    """
    held = period_mask(times, [held_out])
    trained = ~held if train is None else period_mask(times, train) & ~held
    if not held.any():
        raise SchemaError(
            f"the held-out period {held_out.start}..{held_out.end} holds no time of the store "
            f"({times[0]}..{times[-1]}): fix split.held_out"
        )
    if not trained.any():
        raise SchemaError("the training period holds no time of the store: fix split.train")
    return trained, held


def _channel_arrays(
    dataset: xr.Dataset, variables: Sequence[str], levels: Sequence[int]
) -> tuple[list[np.ndarray], list[str]]:
    arrays, names = [], []
    for name in variables:
        if name not in dataset.data_vars:
            raise SchemaError(
                f"variable {name!r} is not in the analysis store (it has "
                f"{sorted(map(str, dataset.data_vars))}): ingest it first"
            )
        var = dataset[name]
        if levels:
            if "level" not in var.dims:
                raise SchemaError(f"{name} has no level dimension; set levels: []")
            for level in levels:
                arrays.append(var.sel(level=level).transpose("time", "lat", "lon").values)
                names.append(f"{name}@{level}")
        else:
            if set(var.dims) != {"time", "lat", "lon"}:
                raise SchemaError(f"{name} has dims {var.dims}; expected (time, lat, lon)")
            arrays.append(var.transpose("time", "lat", "lon").values)
            names.append(name)
    return arrays, names


def load_fields(
    url: str,
    variables: Sequence[str],
    levels: Sequence[int] = (),
    storage_options: dict[str, Any] | None = None,
    card: ModelCard | None = None,
) -> Fields:
    """Read the channels of an analysis store into memory.

    Parameters
    ----------
    url
        The analysis Zarr store (as written by ``climate ingest``).
    variables, levels
        Channels are ``variables x levels``, variable-major (the model card's order).
    storage_options
        fsspec options for object-store URLs.
    card
        When given, the store is first checked against the model's card (variables, levels,
        grid; see :func:`pipelines.models.compatibility.check_dataset`).

    Raises
    ------
    StoreError
        The store cannot be opened.
    SchemaError
        A variable or level is missing, the time axis is not hourly and contiguous, or a
        value is missing (NaN).
    """
    try:
        dataset = xr.open_zarr(url, storage_options=storage_options or None)
    except Exception as exc:  # zarr and fsspec raise their own types
        raise StoreError(
            f"{url}: cannot open the analysis store ({type(exc).__name__}: {exc}); "
            "run `climate ingest` first or fix the URL"
        ) from exc
    if card is not None:
        check_dataset(card, dataset, where=url)
    times = dataset["time"].values.astype("datetime64[ns]")
    steps = np.diff(times.astype("datetime64[s]").astype(np.int64))
    if times.size < 2 or not np.all(steps == HOUR_S):
        raise SchemaError(
            f"{url}: training and evaluation need a contiguous hourly time axis; found "
            f"{times.size} time(s) with steps {sorted(set((steps // 60).tolist()))[:5]} minutes"
        )
    arrays, names = _channel_arrays(dataset, variables, levels)
    values = np.stack(arrays, axis=1).astype(np.float32)
    if np.isnan(values).any():
        raise SchemaError(
            f"{url}: {int(np.isnan(values).sum())} missing value(s) in {names}; the model "
            "needs complete fields: re-ingest or fill the gaps"
        )
    return Fields(
        values=values,
        times=times,
        lat=dataset["lat"].values.astype(np.float64),
        lon=dataset["lon"].values.astype(np.float64),
        channel_names=tuple(names),
    )
