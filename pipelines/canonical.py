"""Normalise any raw dataset to the canonical schema (see schemas/variables.py).

Dimensions ``time, [level], [member], lat, lon``; latitude descending; longitude in [-180, 180);
lexicon short names; canonical units; float32 with NaN for missing values; UTC times.
Everything stays lazy: nothing is decoded until the caller loads it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from pipelines.errors import SchemaError
from schemas.config import SourceBase
from schemas.variables import (
    COORDINATE_ATTRS,
    DIMENSION_ORDER,
    VARIABLES,
    canonical_name,
    unit_conversion,
)

_LAT_NAMES = ("latitude", "lat", "nav_lat", "y_lat")
_LON_NAMES = ("longitude", "lon", "nav_lon", "x_lon")
_LEVEL_NAMES = ("isobaricInhPa", "pressure_level", "level", "plev", "lev", "isobaric")
_MEMBER_NAMES = ("number", "member", "realization", "ensemble_member", "ensemble")
_SUPPORTED_GRIB_GRIDS = {"regular_ll", "regular_gg"}
_CF_ATTRIBUTES = ("long_name", "standard_name", "cell_methods", "comment")
_SPACING_TOLERANCE = 1e-4


@dataclass(frozen=True)
class GridSignature:
    """What must match between a file and the store it goes into."""

    lat: tuple[float, ...]
    lon: tuple[float, ...]
    level: tuple[int, ...]
    member: tuple[int, ...]

    def describe(self) -> str:
        parts = [
            f"{len(self.lat)} lat {self.lat[0]:g}..{self.lat[-1]:g}",
            f"{len(self.lon)} lon {self.lon[0]:g}..{self.lon[-1]:g}",
        ]
        if self.level:
            parts.append(f"levels {list(self.level)}")
        if self.member:
            parts.append(f"{len(self.member)} members")
        return ", ".join(parts)

    def difference(self, other: GridSignature) -> str | None:
        """None when both grids are the same, else a description of both."""
        same = (
            len(self.lat) == len(other.lat)
            and len(self.lon) == len(other.lon)
            and np.allclose(self.lat, other.lat, atol=1e-6)
            and np.allclose(self.lon, other.lon, atol=1e-6)
            and self.level == other.level
            and self.member == other.member
        )
        return None if same else f"{self.describe()} vs {other.describe()}"


def grid_signature(dataset: xr.Dataset) -> GridSignature:
    """The grid of a canonical dataset."""

    def values(name: str) -> tuple[float, ...]:
        return tuple(float(v) for v in dataset[name].values) if name in dataset.coords else ()

    return GridSignature(
        lat=values("lat"),
        lon=values("lon"),
        level=tuple(int(v) for v in values("level")),
        member=tuple(int(v) for v in values("member")),
    )


def _find(dataset: xr.Dataset, candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        if name in dataset.coords or name in dataset.dims:
            return name
    return None


def _reject_unsupported_grid(dataset: xr.Dataset, where: str) -> None:
    grid_types = {
        str(var.attrs["GRIB_gridType"])
        for var in dataset.data_vars.values()
        if "GRIB_gridType" in var.attrs
    }
    unsupported = grid_types - _SUPPORTED_GRIB_GRIDS
    if unsupported:
        raise SchemaError(
            f"{where}: grid type {sorted(unsupported)} is not supported; only regular and "
            "Gaussian latitude-longitude grids are; regrid it first (e.g. cdo remapbil)"
        )
    lat_name, lon_name = _find(dataset, _LAT_NAMES), _find(dataset, _LON_NAMES)
    if lat_name is None or lon_name is None:
        raise SchemaError(
            f"{where}: no latitude/longitude coordinates found (dims {dict(dataset.sizes)}); "
            "the file must be on a regular or Gaussian lat-lon grid; rename the coordinates "
            "with `rename:` if they are called otherwise"
        )
    if dataset[lat_name].ndim != 1 or dataset[lon_name].ndim != 1 or lat_name not in dataset.dims:
        raise SchemaError(
            f"{where}: latitude/longitude are not one-dimensional axes (a reduced, curvilinear or "
            "unstructured grid); only regular and Gaussian lat-lon grids are supported: regrid it"
        )


def _rename_variables(dataset: xr.Dataset, config: SourceBase, where: str) -> xr.Dataset:
    mapping: dict[Hashable, str] = {}
    for name, var in dataset.data_vars.items():
        candidates = [config.rename.get(str(name)), str(name)]
        candidates += [var.attrs.get("GRIB_shortName"), var.attrs.get("GRIB_cfVarName")]
        for candidate in candidates:
            found = canonical_name(candidate) if candidate else None
            if found in config.variables and found not in mapping.values():
                mapping[name] = found
                break
    missing = [name for name in config.variables if name not in mapping.values()]
    if missing:
        present = [str(name) for name in dataset.data_vars]
        raise SchemaError(
            f"{where}: missing variable(s) {missing} (the file has {present}); remove them "
            "from source.variables, or map a source name with `rename: {source_name: short_name}`"
        )
    return dataset[list(mapping)].rename(mapping)


def _canonical_time(dataset: xr.Dataset, config: SourceBase, where: str) -> xr.Dataset:
    if "step" in dataset.dims:
        if dataset.sizes["step"] != 1:
            raise SchemaError(
                f"{where}: holds forecast steps ({dataset.sizes['step']}); an analysis store "
                "takes one field per valid time: select one step with `select: {step: ...}`"
            )
        dataset = dataset.squeeze("step", drop=False)
    if "valid_time" in dataset.coords and "time" in dataset.dims:
        valid = dataset["valid_time"]
        if valid.dims == ("time",):
            dataset = dataset.assign_coords(time=valid.values)
    if "time" not in dataset.dims:
        if "time" in dataset.coords and dataset["time"].ndim == 0:
            dataset = dataset.expand_dims("time")
        elif config.fixed_time is not None:
            stamp = pd.Timestamp(config.fixed_time)
            stamp = stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp
            dataset = dataset.drop_vars("time", errors="ignore").expand_dims(time=[stamp])
        else:
            raise SchemaError(
                f"{where}: has no time axis; set source.fixed_time to the time (UTC) it is valid at"
            )
    times = pd.DatetimeIndex(dataset["time"].values)
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    if times.hasnans:
        raise SchemaError(f"{where}: has missing (NaT) times; fix the time coordinate")
    if not times.is_unique:
        raise SchemaError(f"{where}: repeats times {list(times[times.duplicated()][:3])}")
    dataset = dataset.assign_coords(time=times.values.astype("datetime64[ns]"))
    return dataset if times.is_monotonic_increasing else dataset.sortby("time")


def _canonical_grid(dataset: xr.Dataset, where: str) -> xr.Dataset:
    lat_name, lon_name = _find(dataset, _LAT_NAMES), _find(dataset, _LON_NAMES)
    assert lat_name is not None and lon_name is not None
    dataset = dataset.rename({lat_name: "lat", lon_name: "lon"})
    lat = dataset["lat"].values.astype("float64")
    if np.any(np.abs(lat) > 90):
        raise SchemaError(f"{where}: latitudes outside [-90, 90]; is `lat` really latitude?")
    lon = ((dataset["lon"].values.astype("float64") + 180.0) % 360.0) - 180.0
    if len(np.unique(np.round(lon, 6))) != len(lon):
        raise SchemaError(
            f"{where}: longitudes repeat after wrapping to [-180, 180) (a duplicated meridian?); "
            "drop the repeated column"
        )
    dataset = dataset.assign_coords(lon=lon)
    # Reorder only when needed: a no-op sortby still costs a fancy-indexing copy on load.
    if np.any(np.diff(lon) <= 0):
        dataset = dataset.sortby("lon")
    if np.any(np.diff(lat) >= 0):
        dataset = dataset.sortby("lat", ascending=False)
    for axis in ("lat", "lon"):
        values = dataset[axis].values
        if len(values) > 1 and len(np.unique(values)) != len(values):
            raise SchemaError(f"{where}: repeated {axis} values; the grid is not regular")
    spacing = np.diff(dataset["lon"].values)
    if len(spacing) > 1 and np.ptp(spacing) > _SPACING_TOLERANCE * max(1.0, abs(spacing[0])):
        raise SchemaError(
            f"{where}: longitudes are not evenly spaced; only regular and Gaussian lat-lon "
            "grids are supported: regrid it"
        )
    lat_spacing = np.diff(dataset["lat"].values)
    regular = len(lat_spacing) < 2 or np.ptp(lat_spacing) <= _SPACING_TOLERANCE
    dataset.attrs["grid_type"] = "regular_ll" if regular else "regular_gg"
    return dataset.assign_coords(
        lat=dataset["lat"].values.astype("float64"), lon=dataset["lon"].values.astype("float64")
    )


def _canonical_extra_dims(dataset: xr.Dataset, where: str) -> xr.Dataset:
    level_name, member_name = _find(dataset, _LEVEL_NAMES), _find(dataset, _MEMBER_NAMES)
    renames = {}
    if level_name and level_name in dataset.dims:
        renames[level_name] = "level"
    if member_name and member_name in dataset.dims:
        renames[member_name] = "member"
    dataset = dataset.rename(renames)
    if "level" in dataset.dims:
        levels = dataset["level"].values.astype("float64")
        if str(dataset["level"].attrs.get("units", "")).lower() in ("pa", "pascal"):
            levels = levels / 100.0
        if not np.allclose(levels, np.round(levels)):
            raise SchemaError(f"{where}: pressure levels {levels} are not whole hPa")
        dataset = dataset.assign_coords(level=np.round(levels).astype("int64")).sortby("level")
    if "member" in dataset.dims:
        dataset = dataset.assign_coords(member=dataset["member"].values.astype("int64"))
    extra = [dim for dim in dataset.dims if dim not in DIMENSION_ORDER]
    if extra:
        raise SchemaError(
            f"{where}: dimension(s) {extra} are not canonical {list(DIMENSION_ORDER)}; pick one "
            f"value with `select: {{{extra[0]}: ...}}` or map it with `rename:`"
        )
    keep = [name for name in dataset.coords if name in DIMENSION_ORDER]
    return dataset.drop_vars([name for name in dataset.coords if name not in keep])


def _canonical_units(dataset: xr.Dataset, config: SourceBase, where: str) -> xr.Dataset:
    converted = {}
    for name in config.variables:
        var = dataset[name]
        units = config.units.get(name) or var.attrs.get("units")
        conversion = unit_conversion(name, units)
        spec = VARIABLES[name]
        if conversion is None:
            found = f"units {units!r}" if units else "no units attribute"
            raise SchemaError(
                f"{where}: variable {name!r} has {found}, expected {spec.units!r}; convert "
                f"the data, or declare its units with `units: {{{name}: ...}}` if they are missing"
            )
        data = var if var.dtype == np.float32 else var.astype("float32")
        if conversion.scale != 1.0 or conversion.offset != 0.0:
            data = (data * np.float32(conversion.scale) + np.float32(conversion.offset)).astype(
                "float32"
            )
        attrs = {key: var.attrs[key] for key in _CF_ATTRIBUTES if key in var.attrs}
        attrs.setdefault("long_name", spec.long_name)
        attrs.setdefault("standard_name", spec.standard_name)
        attrs["units"] = spec.units
        data.attrs = attrs
        data.encoding = {}
        converted[name] = data
    return xr.Dataset(converted, attrs=dataset.attrs)


def normalise(raw: xr.Dataset, config: SourceBase, where: str) -> xr.Dataset:
    """Bring a raw dataset to the canonical schema, lazily.

    Raises SchemaError naming ``where`` (the file) and the fix for anything that does not fit.
    """
    dataset = raw
    if config.select:
        try:
            dataset = dataset.sel(config.select)
        except (KeyError, ValueError) as exc:
            raise SchemaError(
                f"{where}: cannot select {config.select} ({exc}); check the dimension names "
                f"{list(raw.dims)} and their values"
            ) from exc
    dims_to_rename = {k: v for k, v in config.rename.items() if k in dataset.dims}
    dataset = dataset.rename(dims_to_rename)
    _reject_unsupported_grid(dataset, where)
    dataset = _rename_variables(dataset, config, where)
    dataset = _canonical_time(dataset, config, where)
    dataset = _canonical_grid(dataset, where)
    grid_type = dataset.attrs["grid_type"]
    dataset = _canonical_extra_dims(dataset, where)
    dataset = _canonical_units(dataset, config, where)
    order = [dim for dim in DIMENSION_ORDER if dim in dataset.dims]
    dataset = dataset.transpose(*order)
    dataset.attrs = {"Conventions": "CF-1.8", "grid_type": grid_type}
    for name, attrs in COORDINATE_ATTRS.items():
        if name in dataset.coords:
            dataset[name].attrs = dict(attrs)
    for var in dataset.data_vars.values():
        var.encoding = {}
    return dataset
