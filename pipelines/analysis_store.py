"""The canonical analysis Zarr store: metadata written once, then whole chunks by time region.

Layout: Zarr format 2 with consolidated metadata, so plain ``xarray.open_zarr(url)`` opens it.
``time`` is stored as int64 seconds since 1970-01-01 (UTC) so that appends are exact.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import dask.array
import numcodecs
import numpy as np
import xarray as xr
import zarr

from pipelines.canonical import GridSignature
from pipelines.errors import StoreError
from pipelines.storage import explain_storage_error, filesystem
from pipelines.store_layout import StoreLayout, VariableLayout
from schemas.config import ChunkSpec, Compression
from schemas.variables import COORDINATE_ATTRS

TIME_UNITS = "seconds since 1970-01-01"
_TIME_COORD_CHUNK = 8760


@dataclass(frozen=True)
class StoreState:
    """What an existing store holds."""

    times: np.ndarray  # datetime64[ns], the store's time axis
    layout: StoreLayout
    time_chunk: int


def to_seconds(times: np.ndarray) -> np.ndarray:
    """datetime64 values as int64 epoch seconds."""
    return np.asarray(times).astype("datetime64[s]").astype("int64")


def from_seconds(seconds: np.ndarray) -> np.ndarray:
    """int64 epoch seconds as datetime64[ns]."""
    return np.asarray(seconds, dtype="int64").astype("datetime64[s]").astype("datetime64[ns]")


def open_group(url: str, storage_options: dict[str, Any], mode: str, what: str) -> zarr.Group:
    """The Zarr v2 root group at ``url``, read from the array metadata (not the consolidated
    copy); errors name the store and the cause."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            return zarr.open_group(
                store=url,
                mode=mode,  # type: ignore[arg-type]
                storage_options=storage_options or None,
                zarr_format=2,
                use_consolidated=False,
            )
    except Exception as exc:
        reason = explain_storage_error(url, exc)
        raise StoreError(f"{url}: cannot open the {what} ({reason})") from exc


def write_template(
    template: xr.Dataset,
    url: str,
    storage_options: dict[str, Any],
    mode: Literal["w", "w-"],
    encoding: dict[str, dict[str, Any]],
    what: str,
) -> None:
    """Write a store's metadata and coordinates once (its data variables are lazy and left
    unwritten: workers fill them by region); errors name the store and the cause."""
    try:
        template.to_zarr(
            url,
            mode=mode,
            compute=False,
            consolidated=True,
            zarr_format=2,
            encoding=encoding,
            storage_options=storage_options or None,
        )
    except Exception as exc:
        reason = explain_storage_error(url, exc)
        raise StoreError(f"{url}: cannot create the {what} ({reason})") from exc


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{name!r} in the store is a group, not an array; use a new store URL")
    return node


def _time_arrays(group: zarr.Group) -> list[zarr.Array]:
    """Every data array whose first dimension is time (the time coordinate excluded)."""
    found = []
    for name, array in group.arrays():
        dims = array.attrs.get("_ARRAY_DIMENSIONS")
        if name != "time" and isinstance(dims, list) and dims and dims[0] == "time":
            found.append(array)
    return found


def _fills_every_chunk(data: np.ndarray, start: int, chunks: tuple[int, ...]) -> bool:
    """True when the first value the region ``data`` (at time ``start``) puts in each chunk it
    touches is not missing: none of those chunks can then end up all missing (NaN)."""
    corners = []
    for axis, (size, chunk) in enumerate(zip(data.shape, chunks, strict=True)):
        offset = start if axis == 0 else 0
        corners.append(np.unique(np.r_[0, np.arange(-offset % chunk, size, chunk)]))
    return data.size > 0 and not np.isnan(data[np.ix_(*corners)]).any()


class AnalysisStore:
    """One canonical Zarr store at ``url`` (a local path or an object-store URL)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options or {}

    def _group(self, mode: str) -> zarr.Group:
        return open_group(self.url, self.storage_options, mode, "analysis store")

    def exists(self) -> bool:
        try:
            self._group("r")
        except StoreError:
            return False
        return True

    def state(self) -> StoreState:
        """Read the store's time axis and layout from the array metadata (not the consolidated
        copy, so that a store whose last update was interrupted is seen as it really is)."""
        group = self._group("r")
        if "time" not in group:
            raise StoreError(f"{self.url}: not an analysis store (no time array); use a new URL")
        time = _array(group, "time")
        if time.attrs.get("units") != TIME_UNITS:
            raise StoreError(
                f"{self.url}: time is stored in {time.attrs.get('units')!r}, not {TIME_UNITS!r}; "
                "this store was not written by climate ingest: use a new URL"
            )
        coords = {
            name: tuple(np.asarray(_array(group, name)[:]).tolist()) if name in group else ()
            for name in ("lat", "lon", "level", "member")
        }
        grid = GridSignature(
            lat=tuple(float(v) for v in coords["lat"]),
            lon=tuple(float(v) for v in coords["lon"]),
            level=tuple(int(v) for v in coords["level"]),
            member=tuple(int(v) for v in coords["member"]),
        )
        variables = []
        time_chunk = 1
        for array in sorted(_time_arrays(group), key=lambda array: array.basename):
            dims = tuple(str(d) for d in array.attrs["_ARRAY_DIMENSIONS"])  # type: ignore[union-attr]
            attrs = {k: v for k, v in array.attrs.items() if not k.startswith("_")}
            variables.append(VariableLayout(array.basename, dims, attrs))
            time_chunk = int(array.chunks[0])
        attrs = {k: v for k, v in group.attrs.items() if not k.startswith("_")}
        return StoreState(
            times=from_seconds(np.asarray(time[:])),
            layout=StoreLayout(grid, tuple(variables), attrs),
            time_chunk=time_chunk,
        )

    def create(
        self, layout: StoreLayout, times: np.ndarray, chunks: ChunkSpec, compression: Compression
    ) -> None:
        """Write the metadata and coordinates of a new store; no data chunk is written."""
        sizes = {
            "time": len(times),
            "level": len(layout.grid.level),
            "member": len(layout.grid.member),
            "lat": len(layout.grid.lat),
            "lon": len(layout.grid.lon),
        }
        chunk_of = chunks.model_dump()
        compressor = numcodecs.Blosc(
            cname=compression.codec,
            clevel=compression.level,
            shuffle=numcodecs.Blosc.SHUFFLE if compression.shuffle else numcodecs.Blosc.NOSHUFFLE,
        )
        data_vars = {}
        encoding: dict[str, dict[str, Any]] = {
            "time": {
                "units": TIME_UNITS,
                "calendar": "proleptic_gregorian",
                "dtype": "int64",
                "chunks": (_TIME_COORD_CHUNK,),
            }
        }
        for var in layout.variables:
            shape = tuple(sizes[d] for d in var.dims)
            chunk_shape = tuple(min(chunk_of[d], max(sizes[d], 1)) for d in var.dims)
            empty = dask.array.empty(shape, dtype="float32", chunks=chunk_shape)
            data_vars[var.name] = xr.Variable(var.dims, empty, attrs=var.attrs)
            encoding[var.name] = {
                "chunks": chunk_shape,
                "compressors": (compressor,),
                "_FillValue": np.float32("nan"),
                "dtype": "float32",
            }
        coords: dict[str, Any] = {
            "time": ("time", np.asarray(times, dtype="datetime64[ns]")),
            "lat": ("lat", np.asarray(layout.grid.lat), COORDINATE_ATTRS["lat"]),
            "lon": ("lon", np.asarray(layout.grid.lon), COORDINATE_ATTRS["lon"]),
        }
        for name in ("level", "member"):
            values = getattr(layout.grid, name)
            if values:
                coords[name] = (name, np.asarray(values, dtype="int64"), COORDINATE_ATTRS[name])
        template = xr.Dataset(data_vars, coords=coords, attrs=layout.attrs)
        write_template(template, self.url, self.storage_options, "w-", encoding, "store")

    def extend(self, times: np.ndarray) -> None:
        """Grow the time axis to ``times`` (the old axis must be its prefix) and re-consolidate."""
        group = self._group("r+")
        seconds = to_seconds(times)
        time = _array(group, "time")
        current = np.asarray(time[:])
        if len(seconds) < len(current) or not np.array_equal(seconds[: len(current)], current):
            raise StoreError(f"{self.url}: the new time axis does not extend the old one")
        for array in _time_arrays(group):
            if array.shape[0] != len(seconds):
                array.resize((len(seconds), *array.shape[1:]))
        time.resize((len(seconds),))
        time[len(current) :] = seconds[len(current) :]
        self.consolidate()

    def consolidate(self) -> None:
        """Rewrite the consolidated metadata after the arrays' metadata changed."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(self._group("r+").store, zarr_format=2)

    def write(self, values: dict[str, np.ndarray], start: int) -> None:
        """Write ``values[name]`` (time-first arrays) at time positions ``start:start+n``."""
        self.write_regions([(start, values)])

    def write_regions(self, regions: Iterable[tuple[int, dict[str, np.ndarray]]]) -> int:
        """Write each ``(start, values)`` as :meth:`write` does, opening the store once;
        returns the bytes written (uncompressed)."""
        group = self._group("r+")
        arrays: dict[str, zarr.Array] = {}
        written = 0
        for start, values in regions:
            for name, data in values.items():
                if name not in arrays:
                    arrays[name] = _array(group, name)
                array = arrays[name]
                if _fills_every_chunk(data, start, array.chunks):
                    # zarr would otherwise scan every chunk for one that is all missing values
                    array = array.with_config({"write_empty_chunks": True})
                array[start : start + data.shape[0]] = data
                written += data.nbytes
        return written

    def truncate(self, length: int) -> None:
        """Cut the time axis back to its first ``length`` times: chunks past the end are
        deleted and the rest of the last chunk is reset to missing values, so a later append
        never shows what was there."""
        group = self._group("r+")
        for array in _time_arrays(group):
            end = min(array.shape[0], -(-length // array.chunks[0]) * array.chunks[0])
            if end > length:
                array[length:end] = array.fill_value
            array.resize((length, *array.shape[1:]))
        _array(group, "time").resize((length,))
        self.consolidate()

    def remove(self) -> None:
        """Delete the whole store."""
        try:
            fs, path = filesystem(self.url, self.storage_options)
            fs.rm(path, recursive=True)
        except Exception as exc:
            reason = explain_storage_error(self.url, exc)
            raise StoreError(f"{self.url}: cannot remove the store ({reason})") from exc

    def read(self, names: tuple[str, ...], positions: np.ndarray) -> dict[str, np.ndarray]:
        """Values of ``names`` at the given time positions."""
        group = self._group("r")
        index = np.asarray(positions, dtype="int64")
        return {name: np.asarray(_array(group, name).oindex[index]) for name in names}
