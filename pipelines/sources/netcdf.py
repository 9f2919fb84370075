"""NetCDF 3/4 files."""

from __future__ import annotations

import warnings
from typing import Any

import xarray as xr

from pipelines.errors import SourceError
from schemas.config import NetcdfSource


class NetcdfReader:
    """Opens NetCDF files lazily with the configured engine."""

    suffixes: tuple[str, ...] = (".nc", ".nc4", ".netcdf", ".cdf")
    is_store: bool = False

    def __init__(self, config: NetcdfSource) -> None:
        self.config = config

    def open(self, location: str, storage_options: dict[str, Any]) -> xr.Dataset:
        try:
            with warnings.catch_warnings():
                # e.g. a NaN _FillValue on a float64 variable: harmless, the data decode to NaN
                warnings.simplefilter("ignore", category=xr.SerializationWarning)
                return xr.open_dataset(
                    location, engine=self.config.engine, cache=False, decode_timedelta=True
                )
        except Exception as exc:
            raise SourceError(
                location,
                f"cannot be opened as NetCDF with engine {self.config.engine!r} "
                f"({type(exc).__name__}: {exc}); check the file is complete and really NetCDF",
            ) from exc
