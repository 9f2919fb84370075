"""GRIB 1/2 through cfgrib and ecCodes."""

from __future__ import annotations

from typing import Any

import xarray as xr

from pipelines.errors import SourceError
from schemas.config import GribSource


class GribReader:
    """Opens GRIB files; any corrupt message is an error, never silently skipped."""

    suffixes: tuple[str, ...] = (".grib", ".grb", ".grib1", ".grib2", ".grb2")
    is_store: bool = False

    def __init__(self, config: GribSource) -> None:
        self.config = config

    def open(self, location: str, storage_options: dict[str, Any]) -> xr.Dataset:
        backend_kwargs: dict[str, Any] = {"indexpath": "", "errors": "raise"}
        if self.config.filter_by_keys:
            backend_kwargs["filter_by_keys"] = dict(self.config.filter_by_keys)
        try:
            return xr.open_dataset(
                location, engine="cfgrib", backend_kwargs=backend_kwargs, decode_timedelta=True
            )
        except Exception as exc:
            text = str(exc)
            if (
                "multiple values for unique key" in text
                or "DatasetBuildError" in type(exc).__name__
            ):
                raise SourceError(
                    location,
                    f"holds messages that do not form one hypercube ({text}); select one kind "
                    "with filter_by_keys, e.g. {typeOfLevel: isobaricInhPa}",
                ) from exc
            raise SourceError(
                location,
                f"cannot be decoded as GRIB ({type(exc).__name__}: {text}); the file is corrupt "
                "or truncated, or not GRIB: re-download it",
            ) from exc
