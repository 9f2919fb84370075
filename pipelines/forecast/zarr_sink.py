"""One forecast run's Zarr store: the template written once by the driver, whole chunks by workers.

Each attempt of a run writes its own store (``runs/<run id>.<attempt>`` under the forecast
store's URL, see :mod:`pipelines.forecast.store`), which becomes visible only when the run
commits. Layout (Zarr format 2, consolidated): one float32 variable per forecast variable with dims
``(init_time, lead_time, [level], lat, lon)``, chunked ``(1, all lead times, [1], lat_chunk,
lon_chunk)``, so a worker that writes every lead time of an initial time writes whole chunks and
never shares a chunk with another worker. ``init_time`` is int64 seconds since 1970,
``lead_time`` int64 hours (decoded as timedelta), ``valid_time = init_time + lead_time`` a 2-D
coordinate. The store's ``status`` attribute is ``incomplete`` until the run finishes.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask.array
import numcodecs
import numpy as np
import xarray as xr
import zarr

from pipelines.analysis_store import open_group, write_template
from pipelines.forecast.plan import HOUR
from schemas.model_card import ModelCard
from schemas.variables import COORDINATE_ATTRS, VARIABLES

TIME_UNITS = "seconds since 1970-01-01"


def _compressor() -> numcodecs.Blosc:
    return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


def _variable_dims(card: ModelCard) -> tuple[str, ...]:
    if card.inputs.levels:
        return ("init_time", "lead_time", "level", "lat", "lon")
    return ("init_time", "lead_time", "lat", "lon")


class RunArrays:
    """The Zarr store of one attempt of a forecast run, at ``url``."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options or {}
        self._group_cache: zarr.Group | None = None

    def _group(self, mode: str) -> zarr.Group:
        return open_group(self.url, self.storage_options, mode, "forecast store")

    def create(
        self,
        card: ModelCard,
        init_seconds: np.ndarray,
        lead_hours: tuple[int, ...],
        attrs: dict[str, Any],
        lat_chunk: int = 256,
        lon_chunk: int = 256,
    ) -> None:
        """Write the metadata and coordinates (a fresh store at the URL); no data chunk."""
        lat = np.asarray(card.inputs.grid.lat, dtype="float64")
        lon = np.asarray(card.inputs.grid.lon, dtype="float64")
        levels = list(card.inputs.levels)
        dims = _variable_dims(card)
        sizes = {
            "init_time": len(init_seconds),
            "lead_time": len(lead_hours),
            "level": len(levels),
            "lat": len(lat),
            "lon": len(lon),
        }
        chunk_of = {
            "init_time": 1,
            "lead_time": len(lead_hours),
            "level": 1,
            "lat": min(lat_chunk, len(lat)),
            "lon": min(lon_chunk, len(lon)),
        }
        shape = tuple(sizes[d] for d in dims)
        chunks = tuple(chunk_of[d] for d in dims)
        init = np.asarray(init_seconds, dtype="int64").astype("datetime64[s]")
        lead = np.asarray(lead_hours, dtype="int64").astype("timedelta64[h]")
        valid = init[:, None] + lead[None, :]
        data_vars = {}
        encoding: dict[str, dict[str, Any]] = {
            "init_time": {"units": TIME_UNITS, "dtype": "int64", "calendar": "proleptic_gregorian"},
            "lead_time": {"units": "hours", "dtype": "int64"},
            "valid_time": {
                "units": TIME_UNITS,
                "dtype": "int64",
                "calendar": "proleptic_gregorian",
            },
        }
        for name in card.outputs.variables:
            spec = VARIABLES[name]
            var_attrs = {"units": spec.units, "long_name": spec.long_name}
            empty = dask.array.empty(shape, dtype="float32", chunks=chunks)
            data_vars[name] = xr.Variable(dims, empty, attrs=var_attrs)
            encoding[name] = {
                "chunks": chunks,
                "compressors": (_compressor(),),
                "_FillValue": np.float32("nan"),
                "dtype": "float32",
            }
        coords: dict[str, Any] = {
            "init_time": ("init_time", init.astype("datetime64[ns]")),
            "lead_time": ("lead_time", lead.astype("timedelta64[ns]")),
            "valid_time": (("init_time", "lead_time"), valid.astype("datetime64[ns]")),
            "lat": ("lat", lat, COORDINATE_ATTRS["lat"]),
            "lon": ("lon", lon, COORDINATE_ATTRS["lon"]),
        }
        if levels:
            coords["level"] = ("level", np.asarray(levels, "int64"), COORDINATE_ATTRS["level"])
        template = xr.Dataset(data_vars, coords=coords, attrs={**attrs, "status": "incomplete"})
        write_template(template, self.url, self.storage_options, "w", encoding, "forecast store")

    def write(self, index: np.ndarray, forecasts: np.ndarray, card: ModelCard) -> int:
        """Write ``forecasts`` [B, lead, channels, lat, lon] at init positions ``index``.

        Every position is one whole row of chunks, so rewriting (a retried batch) is idempotent.
        Returns the number of bytes written (uncompressed).
        """
        if self._group_cache is None:
            self._group_cache = self._group("r+")
        group = self._group_cache
        n_levels = max(1, len(card.inputs.levels))
        written = 0
        for v, name in enumerate(card.outputs.variables):
            array = group[name]
            assert isinstance(array, zarr.Array)
            block = forecasts[:, :, v * n_levels : (v + 1) * n_levels]
            if not card.inputs.levels:
                block = block[:, :, 0]
            for row, position in enumerate(np.asarray(index, dtype=np.int64)):
                array[int(position)] = block[row]
                written += block[row].nbytes
        return written

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the store complete with the run's summary and consolidate the metadata."""
        group = self._group("r+")
        group.attrs.update({"status": "complete", **summary})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(group.store, zarr_format=2)


def lead_seconds(lead_hours: tuple[int, ...]) -> np.ndarray:
    """Lead times in seconds."""
    return np.asarray(lead_hours, dtype=np.int64) * HOUR
