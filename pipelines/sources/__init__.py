"""Readers, one module per format, registered explicitly by the config ``kind``."""

from __future__ import annotations

from pipelines.sources.base import Source
from pipelines.sources.grib import GribReader
from pipelines.sources.netcdf import NetcdfReader
from pipelines.sources.zarr import ZarrReader
from schemas.config import GribSource, NetcdfSource, SourceConfig, ZarrSource


def reader_for(config: SourceConfig) -> Source:
    """The reader registered for a source section."""
    if isinstance(config, GribSource):
        return GribReader(config)
    if isinstance(config, NetcdfSource):
        return NetcdfReader(config)
    if isinstance(config, ZarrSource):
        return ZarrReader(config)
    raise TypeError(f"no reader registered for {type(config).__name__}")


__all__ = ["Source", "reader_for"]
