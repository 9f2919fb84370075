"""Existing Zarr stores, local or in object storage."""

from __future__ import annotations

from typing import Any

import xarray as xr

from pipelines.errors import SourceError
from pipelines.storage import explain_storage_error
from schemas.config import ZarrSource


class ZarrReader:
    """Opens a Zarr store (v2 or v3, consolidated or not) lazily."""

    suffixes: tuple[str, ...] = (".zarr",)
    is_store: bool = True

    def __init__(self, config: ZarrSource) -> None:
        self.config = config

    def open(self, location: str, storage_options: dict[str, Any]) -> xr.Dataset:
        try:
            return xr.open_zarr(
                location,
                group=self.config.group,
                storage_options=storage_options or None,
                chunks=None,
                decode_timedelta=True,
            )
        except Exception as exc:
            raise SourceError(location, explain_storage_error(location, exc)) from exc
