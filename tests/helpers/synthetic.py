"""Seeded synthetic ERA5-like fields, for tests and benchmarks.

Each field is a smooth function of ``(seed, variable, time, lat, lon[, level, member])``:
a climatology (latitude gradient, a static "land/sea" pattern), a seasonal and a diurnal cycle,
and anomalies made of value noise on coarse knot grids, interpolated smoothly in space and time
and advected west to east. Every time is computed on its own from ``(seed, time)``, so the
values at a time never depend on which other times are generated with it: the second of two
files of 5 times equals the last 5 of 10 times generated in one go, bit for bit.

Values are computed on the canonical grid (latitude descending, longitude ascending in
[-180, 180)) and only then put in the order asked for, so a file written with latitude
ascending or longitude in [0, 360) normalises to exactly the canonical values.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from schemas.variables import COORDINATE_ATTRS, VARIABLES

Naming = Literal["canonical", "era5"]

_KNOT_OFFSET = 2**40  # keeps knot indices of pre-1970 times non-negative for SeedSequence
_STATIC_KNOT = 2**41 + 1
_PRESSURE_LEVELS = {"t", "z", "u", "v", "q"}
_ERA5_NAMES = {"lat": "latitude", "lon": "longitude", "level": "pressure_level", "member": "number"}
_G = 9.80665


@dataclass(frozen=True)
class _Octave:
    """One layer of value noise: knot spacing in degrees and hours, drift, weight."""

    degrees: float
    hours: int
    drift_deg_per_hour: float
    weight: float


# Large slow systems, synoptic features, and fine texture that changes faster.
_OCTAVES = (
    _Octave(degrees=15.0, hours=24, drift_deg_per_hour=0.5, weight=1.0),
    _Octave(degrees=5.0, hours=6, drift_deg_per_hour=0.7, weight=0.45),
    _Octave(degrees=1.25, hours=3, drift_deg_per_hour=0.8, weight=0.12),
)
_STATIC_OCTAVE = _Octave(degrees=3.0, hours=1, drift_deg_per_hour=0.0, weight=1.0)


@dataclass(frozen=True)
class _Grid:
    """Canonical-order coordinates and, per dimension, trigonometric helpers."""

    lat: np.ndarray  # float64, descending
    lon: np.ndarray  # float64, ascending in [-180, 180)

    @property
    def phi(self) -> np.ndarray:
        return np.deg2rad(self.lat)[:, None]


def _var_code(name: str) -> int:
    return zlib.crc32(name.encode())


def _axis_weights(
    position: np.ndarray, n_knots: int, periodic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knot indices either side of each position (in knot units) and a C1 (smoothstep) weight."""
    lower = np.floor(position)
    frac = position - lower
    i0 = lower.astype(np.intp)
    if periodic:
        i0 %= n_knots
        i1 = (i0 + 1) % n_knots
    else:
        i0 = np.clip(i0, 0, n_knots - 2)
        frac = np.clip(position - i0, 0.0, 1.0)
        i1 = i0 + 1
    weight = (frac * frac * (3.0 - 2.0 * frac)).astype(np.float32)
    return i0, i1, weight


def _knot_field(
    seed: int, code: int, octave: int, knot: int, member: int, shape: tuple[int, int]
) -> np.ndarray:
    rng = np.random.default_rng([seed, code, octave, knot, member])
    return rng.standard_normal(shape, dtype=np.float32)


class _Noise:
    """Value noise of one variable (and member), evaluated one time at a time."""

    def __init__(self, seed: int, name: str, member: int, grid: _Grid) -> None:
        self.seed, self.code, self.member, self.grid = seed, _var_code(name), member, grid
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._lat_weights = []
        for octave in (*_OCTAVES, _STATIC_OCTAVE):
            n_lat = int(np.ceil(180.0 / octave.degrees)) + 1
            self._lat_weights.append(
                _axis_weights((90.0 - grid.lat) / octave.degrees, n_lat, False)
            )

    def _knots(self, index: int, octave: _Octave, knot: int) -> np.ndarray:
        key = (index, knot)
        if key not in self._cache:
            shape = (int(np.ceil(180.0 / octave.degrees)) + 1, round(360.0 / octave.degrees))
            self._cache[key] = _knot_field(self.seed, self.code, index, knot, self.member, shape)
            if len(self._cache) > 64:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def _interpolate(
        self, index: int, octave: _Octave, coarse: np.ndarray, shift: float
    ) -> np.ndarray:
        i0, i1, wy = self._lat_weights[index]
        along_lat = coarse[i0] + wy[:, None] * (coarse[i1] - coarse[i0])
        position = ((self.grid.lon + 180.0 - shift) % 360.0) / octave.degrees
        j0, j1, wx = _axis_weights(position, coarse.shape[1], True)
        left, right = along_lat[:, j0], along_lat[:, j1]
        return left + wx * (right - left)

    def at(self, seconds: int) -> np.ndarray:
        """Unit-variance-ish noise at one time (epoch seconds), float32 (lat, lon)."""
        total: np.ndarray | None = None
        for index, octave in enumerate(_OCTAVES):
            step = octave.hours * 3600
            knot, offset = divmod(seconds, step)
            frac = offset / step
            w = np.float32(frac * frac * (3.0 - 2.0 * frac))
            a = self._knots(index, octave, knot + _KNOT_OFFSET)
            b = self._knots(index, octave, knot + 1 + _KNOT_OFFSET)
            coarse = a + w * (b - a)
            shift = (octave.drift_deg_per_hour * seconds / 3600.0) % 360.0
            layer = self._interpolate(index, octave, coarse, shift)
            layer *= np.float32(octave.weight)
            total = layer if total is None else total + layer
        assert total is not None
        return total

    def static(self) -> np.ndarray:
        """A time-independent pattern (orography, land and sea), float32 (lat, lon)."""
        index = len(_OCTAVES)
        coarse = self._knots(index, _STATIC_OCTAVE, _STATIC_KNOT)
        return self._interpolate(index, _STATIC_OCTAVE, coarse, 0.0)


# --- climatologies: float64 (lat, lon) or (lat, 1) arrays from the grid and a level -------------


def _t_clim(grid: _Grid, level: float | None) -> np.ndarray:
    phi = grid.phi
    surface = 301.0 - 46.0 * np.sin(phi) ** 2
    if level is None:
        return surface
    return surface * (level / 1000.0) ** 0.19 - 10.0 * (1.0 - level / 1000.0) * np.cos(phi)


def _z_clim(grid: _Grid, level: float | None) -> np.ndarray:
    pressure = 500.0 if level is None else level
    scale_height = 7400.0 + 1300.0 * np.cos(grid.phi) ** 2
    return _G * scale_height * np.log(1013.25 / pressure)


def _u_clim(grid: _Grid, level: float | None) -> np.ndarray:
    phi = grid.phi
    strength = 1.0 if level is None else 0.6 + 0.8 * (1.0 - level / 1000.0)
    return strength * (18.0 * np.sin(2.0 * phi) ** 2 - 7.0 * np.cos(phi) ** 8)


def _u10_clim(grid: _Grid, level: float | None) -> np.ndarray:
    return 0.5 * _u_clim(grid, level)


def _zero(grid: _Grid, level: float | None) -> np.ndarray:
    return np.zeros((len(grid.lat), 1))


def _msl_clim(grid: _Grid, level: float | None) -> np.ndarray:
    phi = grid.phi
    return 101325.0 + 700.0 * np.cos(4.0 * phi) * np.cos(phi) - 500.0 * np.sin(phi) ** 4


def _q_clim(grid: _Grid, level: float | None) -> np.ndarray:
    pressure = 1000.0 if level is None else level
    return 0.017 * np.cos(grid.phi) ** 4 * (pressure / 1000.0) ** 3 + 2e-6


@dataclass(frozen=True)
class _Model:
    """How one variable is built: climatology plus scaled static, seasonal, diurnal, noise."""

    clim: Callable[[_Grid, float | None], np.ndarray]
    anomaly: float
    static: float = 0.0
    seasonal: float = 0.0
    diurnal: float = 0.0
    positive: bool = False


_MODELS: dict[str, _Model] = {
    "t2m": _Model(_t_clim, anomaly=4.5, static=4.0, seasonal=13.0, diurnal=5.0),
    "t": _Model(_t_clim, anomaly=3.0, static=0.5, seasonal=8.0, diurnal=0.5),
    "z": _Model(_z_clim, anomaly=1400.0, static=50.0, seasonal=600.0),
    "u": _Model(_u_clim, anomaly=9.0, static=1.0),
    "v": _Model(_zero, anomaly=7.0, static=1.0),
    "u10": _Model(_u10_clim, anomaly=4.0, static=1.5),
    "v10": _Model(_zero, anomaly=3.5, static=1.5),
    "msl": _Model(_msl_clim, anomaly=1100.0, static=150.0, seasonal=300.0),
    "sp": _Model(_msl_clim, anomaly=1000.0, static=-6000.0, seasonal=300.0),
    "q": _Model(_q_clim, anomaly=0.0015, static=0.001, seasonal=0.002, positive=True),
}


class _Field:
    """One variable on one grid (one level, one member), evaluated per time."""

    def __init__(self, name: str, grid: _Grid, seed: int, level: float | None, member: int) -> None:
        self.model = _MODELS[name]
        self.grid = grid
        self.noise = _Noise(seed, name, 0, grid)
        self.spread = _Noise(seed, name, member + 1, grid) if member else None
        phi = grid.phi
        strength = 1.0 if level is None else float(np.sqrt(1.1 - level / 1000.0))
        self.anomaly_amp = self.model.anomaly * strength * (0.35 + 0.65 * np.sin(phi) ** 2)
        self.anomaly_amp = self.anomaly_amp.astype(np.float32)
        base = self.model.clim(grid, level) + self.model.static * self.noise.static()
        self.base = np.broadcast_to(base, (len(grid.lat), len(grid.lon))).astype(np.float32)
        self.seasonal_amp = self.model.seasonal * np.sin(phi)[:, 0]
        self.diurnal_amp = (self.model.diurnal * np.cos(phi)[:, 0] ** 2).astype(np.float32)

    def at(self, seconds: int) -> np.ndarray:
        model = self.model
        noise = self.noise.at(seconds)
        if self.spread is not None:
            noise += np.float32(0.3) * self.spread.at(seconds)
        field = self.base + self.anomaly_amp * noise
        if model.seasonal:
            day = seconds / 86400.0
            season = np.cos(2.0 * np.pi * (day - 15.0) / 365.2425)
            field -= (self.seasonal_amp * season).astype(np.float32)[:, None]
        if model.diurnal:
            solar_hour = (seconds % 86400) / 3600.0 + self.grid.lon / 15.0
            cycle = np.cos(2.0 * np.pi * (solar_hour - 14.0) / 24.0).astype(np.float32)
            field += self.diurnal_amp[:, None] * cycle[None, :]
        if model.positive:
            np.maximum(field, np.float32(1e-7), out=field)
        return field


def regular_grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """A global regular grid: latitudes 90..-90 (poles included), longitudes -180..<180."""
    n_lat = round(180.0 / resolution) + 1
    n_lon = round(360.0 / resolution)
    if not np.isclose(n_lon * resolution, 360.0):
        raise ValueError(f"resolution {resolution} does not divide 360 degrees")
    return np.linspace(90.0, -90.0, n_lat), -180.0 + resolution * np.arange(n_lon)


def _axis(value: int | Sequence[float] | np.ndarray, kind: str) -> np.ndarray:
    if isinstance(value, int | np.integer):
        if kind == "lat":
            return np.linspace(90.0, -90.0, int(value))
        return -180.0 + (360.0 / int(value)) * np.arange(int(value))
    return np.asarray(value, dtype="float64")


def _time_index(
    times: pd.DatetimeIndex | int | Sequence[Any], start: str | pd.Timestamp, freq: str
) -> pd.DatetimeIndex:
    if isinstance(times, int | np.integer):
        return pd.date_range(start, periods=int(times), freq=freq)
    return pd.DatetimeIndex(times)


def _members(members: int | Sequence[int] | None) -> list[int] | None:
    if members is None:
        return None
    if isinstance(members, int | np.integer):
        return list(range(int(members)))
    return [int(v) for v in members]


def _variable_values(
    name: str,
    grid: _Grid,
    seed: int,
    seconds: np.ndarray,
    level_axis: list[float | None],
    member_values: list[int] | None,
    reorder: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """All values of one variable as (time, level, member, lat, lon), one time at a time."""
    member_axis = member_values if member_values is not None else [0]
    shape = (len(seconds), len(level_axis), len(member_axis), len(grid.lat), len(grid.lon))
    values = np.empty(shape, dtype=np.float32)
    for li, level in enumerate(level_axis):
        for mi, member in enumerate(member_axis):
            field = _Field(name, grid, seed, level, member)
            for ti, second in enumerate(seconds):
                values[ti, li, mi] = reorder(field.at(int(second)))
    return values


def synthetic_dataset(
    times: pd.DatetimeIndex | int,
    variables: Sequence[str] = ("t2m",),
    *,
    lat: int | Sequence[float] | np.ndarray = 181,
    lon: int | Sequence[float] | np.ndarray = 360,
    resolution: float | None = None,
    levels: Sequence[int] | None = None,
    members: int | Sequence[int] | None = None,
    seed: int = 0,
    start: str | pd.Timestamp = "2020-01-01",
    freq: str = "1h",
    lat_descending: bool = True,
    lon_0_360: bool = False,
    naming: Naming = "canonical",
    rename: dict[str, str] | None = None,
) -> xr.Dataset:
    """A seeded ERA5-like dataset, in memory.

    Parameters
    ----------
    times
        The times, or how many from ``start`` every ``freq``.
    variables
        Lexicon short names (``t2m``, ``msl``, ``u10``, ``v10``, ``sp``, ``t``, ``z``, ``u``,
        ``v``, ``q``); the pressure-level ones get a level dimension when ``levels`` is given.
    lat, lon
        Number of points of a global regular grid (lat 90..-90, lon -180..<180), or the
        coordinate values themselves (any order, lon in either convention).
    resolution
        Grid spacing in degrees of a global regular grid; overrides ``lat`` and ``lon``.
    levels
        Pressure levels in hPa, or None for single-level fields (z is then at 500 hPa).
    members
        Number of ensemble members (0..n-1) or their numbers; None for no member dimension.
    seed
        Same seed, same values.
    lat_descending, lon_0_360
        Orientation of the output: latitude order, and longitude in [0, 360) sorted ascending
        instead of [-180, 180). Values at a point do not depend on either.
    naming
        ``canonical`` (lat, lon, level, member) or ``era5`` (latitude, longitude,
        pressure_level, number), as CDS NetCDF files name them.
    rename
        Variable names to use instead of the short names, e.g. ``{"t2m": "2t"}``.

    Returns
    -------
    xarray.Dataset
        float32 variables of dims (time, [level], [member], lat, lon) with CF attributes.
    """
    unknown = [name for name in variables if name not in _MODELS]
    if unknown:
        raise ValueError(f"no synthetic model for {unknown}; choose from {sorted(_MODELS)}")
    index = _time_index(times, start, freq)
    if resolution is not None:
        lat_values, lon_values = regular_grid(resolution)
    else:
        lat_values, lon_values = _axis(lat, "lat"), _axis(lon, "lon")
    wrapped = ((lon_values + 180.0) % 360.0) - 180.0
    grid = _Grid(lat=np.sort(lat_values)[::-1].copy(), lon=np.sort(wrapped))
    lat_out = np.sort(lat_values)[::-1] if lat_descending else np.sort(lat_values)
    lon_out = np.sort(wrapped % 360.0) if lon_0_360 else grid.lon
    lat_take = np.searchsorted(-grid.lat, -lat_out)
    lon_take = np.searchsorted(grid.lon, ((lon_out + 180.0) % 360.0) - 180.0)
    reorder: Callable[[np.ndarray], np.ndarray] = (
        (lambda field: field[np.ix_(lat_take, lon_take)])
        if lat_descending is False or lon_0_360
        else (lambda field: field)
    )

    level_values = [int(v) for v in levels] if levels is not None else None
    member_values = _members(members)
    seconds = index.values.astype("datetime64[s]").astype("int64")
    names = dict(_ERA5_NAMES) if naming == "era5" else {k: k for k in _ERA5_NAMES}
    data_vars = {}
    for name in variables:
        has_level = level_values is not None and name in _PRESSURE_LEVELS
        level_axis: list[float | None] = [float(v) for v in level_values or []] or [None]
        if not has_level:
            level_axis = [None]
        values = _variable_values(name, grid, seed, seconds, level_axis, member_values, reorder)
        dims = ["time", names["level"], names["member"], names["lat"], names["lon"]]
        if not has_level:
            values = values[:, 0]
            dims.remove(names["level"])
        if member_values is None:
            values = values[:, :, 0] if has_level else values[:, 0]
            dims.remove(names["member"])
        spec = VARIABLES[name]
        attrs = {
            "units": spec.units,
            "long_name": spec.long_name,
            "standard_name": spec.standard_name,
        }
        data_vars[(rename or {}).get(name, name)] = (tuple(dims), values, attrs)

    coords: dict[str, Any] = {
        "time": ("time", index.values.astype("datetime64[ns]"), {"standard_name": "time"}),
        names["lat"]: (names["lat"], lat_out, dict(COORDINATE_ATTRS["lat"])),
        names["lon"]: (names["lon"], lon_out, dict(COORDINATE_ATTRS["lon"])),
    }
    if level_values is not None and any(name in _PRESSURE_LEVELS for name in variables):
        level_attrs = {"units": "hPa", "long_name": "pressure", "positive": "down"}
        coords[names["level"]] = (names["level"], np.asarray(level_values, "int64"), level_attrs)
    if member_values is not None:
        member_attrs = {"long_name": "ensemble member numerical id"}
        coords[names["member"]] = (
            names["member"],
            np.asarray(member_values, "int64"),
            member_attrs,
        )
    attrs = {"Conventions": "CF-1.8", "source": f"tests.helpers.synthetic (seed {seed})"}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _time_encoding(index: pd.DatetimeIndex) -> dict[str, Any]:
    seconds = index.values.astype("datetime64[s]").astype("int64")
    if np.all(seconds % 3600 == 0):
        return {
            "units": "hours since 1900-01-01 00:00:00.0",
            "calendar": "gregorian",
            "dtype": "int32",
        }
    return {"units": "seconds since 1970-01-01 00:00:00", "calendar": "gregorian", "dtype": "int64"}


def write_netcdf_files(
    directory: str | Path,
    n_files: int,
    times_per_file: int,
    variables: Sequence[str] = ("t2m",),
    *,
    seed: int = 0,
    start: str | pd.Timestamp = "2020-01-01",
    freq: str = "1h",
    prefix: str = "synthetic",
    complevel: int | None = None,
    **grid: Any,
) -> list[Path]:
    """Write ``n_files`` NetCDF4 files of ``times_per_file`` consecutive times each.

    File ``i`` holds times ``i * times_per_file`` onwards of one time axis from ``start``
    every ``freq``, so together the files equal ``synthetic_dataset`` of all times at once.
    Variables are float32 with CF ``units``/``standard_name``, ``_FillValue`` NaN, and no
    compression unless ``complevel`` (zlib 1-9) is given. ``grid`` takes the keyword
    arguments of :func:`synthetic_dataset` (lat, lon, resolution, levels, members,
    lat_descending, lon_0_360, naming, rename).

    Returns
    -------
    list of Path
        The files written, in time order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index = pd.date_range(start, periods=n_files * times_per_file, freq=freq)
    width = max(3, len(str(n_files - 1)))
    paths = []
    for number in range(n_files):
        part = index[number * times_per_file : (number + 1) * times_per_file]
        dataset = synthetic_dataset(part, variables, seed=seed, **grid)
        encoding: dict[str, dict[str, Any]] = {"time": _time_encoding(part)}
        for name in dataset.data_vars:
            encoding[str(name)] = {"dtype": "float32", "_FillValue": np.float32("nan")}
            if complevel:
                encoding[str(name)].update({"zlib": True, "complevel": complevel})
            else:
                encoding[str(name)].update({"zlib": False, "contiguous": True})
        path = directory / f"{prefix}-{number:0{width}d}.nc"
        tmp = path.with_name(path.name + ".part")
        dataset.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
        tmp.replace(path)
        paths.append(path)
    return paths
