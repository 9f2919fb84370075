"""The source contract: open one file (or store) lazily as a raw xarray Dataset."""

from __future__ import annotations

from typing import Any, Protocol

import xarray as xr


class Source(Protocol):
    """A reader for one format.

    ``suffixes`` select files when a directory or prefix is listed; ``is_store`` says whether
    each URL is a whole store (Zarr) rather than a file. ``open`` returns the raw dataset, lazily;
    ``location`` is a local path for file formats and the URL itself for stores.
    """

    suffixes: tuple[str, ...]
    is_store: bool

    def open(self, location: str, storage_options: dict[str, Any]) -> xr.Dataset: ...
