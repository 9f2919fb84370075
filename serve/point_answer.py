"""The forecast run as the point API sees it, and the values at points: bilinear or nearest.

:class:`RunView` holds the newest initial time of the committed run in memory; :func:`answer`
reads a parsed :class:`~schemas.forecast_api.PointQuery` from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import xarray as xr

from pipelines.errors import SchemaError
from schemas.forecast_api import PointQuery, RequestedVariable, TemperatureUnit
from schemas.variables import VARIABLES

HOUR = 3600
_LEVEL_FIELD = re.compile(r"^(?P<lexicon>.+)_(?P<level>\d+)hPa$")
# Lexicon units as the API writes them (temperatures follow temperature_unit instead).
DISPLAY_UNITS = {
    "K": "K",
    "Pa": "Pa",
    "m s**-1": "m/s",
    "m**2 s**-2": "m²/s²",
    "kg kg**-1": "kg/kg",
}
TEMPERATURE_UNITS: dict[TemperatureUnit, str] = {"celsius": "°C", "fahrenheit": "°F", "kelvin": "K"}


def field_name(lexicon: str, level: int | None) -> str:
    """A run's field: the lexicon name, with ``_<level>hPa`` for one pressure level."""
    return lexicon if level is None else f"{lexicon}_{level}hPa"


def split_field(name: str) -> tuple[str, int | None]:
    """The lexicon name and level of a run's field (``t_850hPa`` -> ``("t", 850)``)."""
    found = _LEVEL_FIELD.match(name)
    if found and found["lexicon"] in VARIABLES:
        return found["lexicon"], int(found["level"])
    return name, None


def is_temperature(lexicon: str) -> bool:
    """Whether ``temperature_unit`` applies to the variable (its lexicon unit is kelvin)."""
    return VARIABLES[lexicon].units == "K"


def unit_of(variable: RequestedVariable, temperature_unit: TemperatureUnit) -> str:
    """The unit the API answers ``variable`` in (°C/°F/K for temperatures, else the lexicon's)."""
    if is_temperature(variable.lexicon):
        return TEMPERATURE_UNITS[temperature_unit]
    units = VARIABLES[variable.lexicon].units
    return DISPLAY_UNITS.get(units, units)


@dataclass(frozen=True)
class RunView:
    """The newest initial time of a committed forecast run, in memory.

    ``fields`` maps a field name (``t2m``, or ``t_850hPa`` for one level of a level variable)
    to float32 values ``[lead, lat, lon]``; ``lat`` is descending, ``lon`` ascending in
    [-180, 180), as the canonical schema has them.
    """

    run_id: str
    model_name: str
    model_version: str
    init_seconds: int  # the initial time, seconds since 1970 (UTC)
    lead_hours: np.ndarray  # int64 [lead]
    lat: np.ndarray  # float64 [lat], descending
    lon: np.ndarray  # float64 [lon], ascending
    fields: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        shape = (len(self.lead_hours), len(self.lat), len(self.lon))
        for name, values in self.fields.items():
            if values.shape != shape:
                raise SchemaError(
                    f"run {self.run_id}: field {name} has shape {values.shape}, expected "
                    f"[lead, lat, lon] = {shape}; build the view with RunView.from_dataset"
                )
        if np.any(np.diff(self.lat) >= 0) or np.any(np.diff(self.lon) <= 0):
            raise SchemaError(
                f"run {self.run_id}: latitude must descend and longitude ascend (canonical "
                "schema); open the run with open_forecast_store"
            )

    @classmethod
    def from_dataset(cls, dataset: xr.Dataset) -> RunView:
        """The newest initial time of a forecast run, as ``open_forecast_store`` returns it.

        Loads that initial time into memory. Variables of the lexicon are kept; one with a
        ``level`` dimension becomes one field per level (``t_850hPa``).

        Raises
        ------
        SchemaError
            The dataset is not a forecast run (no ``run_id``/``model`` attributes, other dims).
        """
        model = dataset.attrs.get("model")
        if "run_id" not in dataset.attrs or not isinstance(model, Mapping):
            raise SchemaError(
                "the dataset has no run_id/model attributes, so it is not a forecast run; "
                "open it with pipelines.forecast.open_forecast_store"
            )
        latest = dataset.isel(init_time=int(np.argmax(dataset.init_time.values)))
        lead = latest.lead_time.values.astype("timedelta64[s]").astype(np.int64)
        fields: dict[str, np.ndarray] = {}
        for name, array in latest.data_vars.items():
            if str(name) not in VARIABLES:
                continue
            loaded = array.load()
            for level in loaded.level.values.tolist() if "level" in loaded.dims else [None]:
                one = loaded if level is None else loaded.sel(level=level)
                key = field_name(str(name), level)
                order = one.transpose("lead_time", "lat", "lon").values
                fields[key] = np.ascontiguousarray(order, dtype=np.float32)
        init = latest.init_time.values.astype("datetime64[s]").astype(np.int64)
        return cls(
            run_id=str(dataset.attrs["run_id"]),
            model_name=str(model.get("name", "")),
            model_version=str(model.get("version", "")),
            init_seconds=int(init),
            lead_hours=lead // HOUR,
            lat=np.asarray(latest.lat.values, dtype=np.float64),
            lon=np.asarray(latest.lon.values, dtype=np.float64),
            fields=fields,
        )

    @property
    def global_lon(self) -> bool:
        """Whether the longitudes go round the globe (interpolation wraps at the dateline)."""
        if len(self.lon) < 2:
            return False
        step = float(np.median(np.diff(self.lon)))
        return abs(float(self.lon[-1] - self.lon[0]) + step - 360.0) < 1e-6 * 360.0


@dataclass(frozen=True)
class PointForecast:
    """The answer at one location: times and, per requested name, float32 values."""

    latitude: float  # the grid cell (nearest) or the requested point (bilinear)
    longitude: float
    valid_seconds: np.ndarray  # int64, UTC
    times: list[str] | list[int]  # local ISO 8601 (minutes) or unix seconds
    values: dict[str, np.ndarray]  # requested name -> float32 [time]
    units: dict[str, str]  # requested name -> unit as written
    timezone: str
    timezone_abbreviation: str
    utc_offset_seconds: int
    run_id: str
    model: str
    model_version: str


def _bracket(axis: np.ndarray, point: float, wrap: bool) -> tuple[int, int, float]:
    """Indices either side of ``point`` on an ascending axis and the weight of the second."""
    n = len(axis)
    if n == 1:
        return 0, 0, 0.0
    if wrap and (point < axis[0] or point > axis[-1]):
        span = float(axis[0]) + 360.0 - float(axis[-1])
        return n - 1, 0, ((point - float(axis[-1])) % 360.0) / span
    upper = int(np.clip(np.searchsorted(axis, point, side="right"), 1, n - 1))
    lower = upper - 1
    return lower, upper, (point - float(axis[lower])) / float(axis[upper] - axis[lower])


def _nearest(axis: np.ndarray, point: float, wrap: bool) -> int:
    distance = np.abs(axis - point)
    if wrap:
        distance = np.minimum(distance, 360.0 - distance)
    return int(np.argmin(distance))


def interpolate(
    run: RunView, name: str, leads: np.ndarray, lat: float, lon: float, method: str
) -> tuple[np.ndarray, float, float]:
    """Values of field ``name`` at lead positions ``leads`` and the coordinates they stand for.

    Bilinear weighs the four surrounding grid points (exactly a grid value on a grid point;
    a NaN neighbour with a non-zero weight gives NaN); nearest takes the closest grid point.
    """
    field = run.fields[name]  # [lead, lat, lon]: index points, never copy the whole field
    if method == "nearest":
        i, j = _nearest(run.lat, lat, False), _nearest(run.lon, lon, run.global_lon)
        return field[leads, i, j].copy(), float(run.lat[i]), float(run.lon[j])
    # Latitude descends: bracket on the negated (ascending) axis.
    i0, i1, wy = _bracket(-run.lat, -lat, False)
    j0, j1, wx = _bracket(run.lon, lon, run.global_lon)
    total = np.zeros(len(leads), dtype=np.float64)
    for i, j, weight in (
        (i0, j0, (1 - wy) * (1 - wx)),
        (i0, j1, (1 - wy) * wx),
        (i1, j0, wy * (1 - wx)),
        (i1, j1, wy * wx),
    ):
        if weight > 0:
            total += weight * field[leads, i, j].astype(np.float64)
    return total.astype(np.float32), lat, lon


def convert(values: np.ndarray, lexicon: str, unit: TemperatureUnit) -> np.ndarray:
    """Values from the lexicon's unit to the unit answered (temperatures only change)."""
    if not is_temperature(lexicon) or unit == "kelvin":
        return values.astype(np.float32)
    celsius = values.astype(np.float64) - 273.15
    return (celsius if unit == "celsius" else celsius * 9.0 / 5.0 + 32.0).astype(np.float32)


def local_times(valid_seconds: np.ndarray, timezone: str) -> tuple[list[str], int, str]:
    """Local ISO 8601 times (``2019-03-31T23:00``), and the first time's UTC offset and zone
    abbreviation (Open-Meteo gives one per answer).

    Each time is converted with its own offset, so a series across a DST change shows the
    local clock's jump (``00:00``, ``02:00``).
    """
    zone = UTC if timezone == "GMT" else ZoneInfo(timezone)
    stamps = [datetime.fromtimestamp(int(s), UTC).astimezone(zone) for s in valid_seconds]
    first = stamps[0] if stamps else datetime.now(UTC).astimezone(zone)
    offset = first.utcoffset()
    abbreviation = "GMT" if timezone == "GMT" else (first.tzname() or timezone)
    seconds = int(offset.total_seconds()) if offset is not None else 0
    return [s.strftime("%Y-%m-%dT%H:%M") for s in stamps], seconds, abbreviation


def answer(query: PointQuery, run: RunView) -> list[PointForecast]:
    """The forecast at every location of ``query``, from ``run``'s newest initial time.

    Parameters
    ----------
    query
        A query parsed against this run by :func:`serve.point_query.parse_query`.
    run
        The run the query was parsed against.

    Returns
    -------
    list[PointForecast]
        One per location, in the order asked; values float32 in the units answered.
    """
    position = {int(h): i for i, h in enumerate(run.lead_hours.tolist())}
    leads = np.array([position[h] for h in query.lead_hours], dtype=np.intp)
    valid = run.init_seconds + np.asarray(query.lead_hours, dtype=np.int64) * HOUR
    iso, offset, abbreviation = local_times(valid, query.timezone)
    times: list[str] | list[int] = iso if query.timeformat == "iso8601" else valid.tolist()
    units = {v.name: unit_of(v, query.temperature_unit) for v in query.variables}
    points = []
    for lat, lon in zip(query.latitudes, query.longitudes, strict=True):
        values: dict[str, np.ndarray] = {}
        at_lat, at_lon = lat, lon  # the grid cell's centre for nearest
        for variable in query.variables:
            raw, at_lat, at_lon = interpolate(
                run, variable.field, leads, lat, lon, query.cell_selection
            )
            values[variable.name] = convert(raw, variable.lexicon, query.temperature_unit)
        points.append(
            PointForecast(
                latitude=at_lat,
                longitude=at_lon,
                valid_seconds=valid,
                times=times,
                values=values,
                units=units,
                timezone=query.timezone,
                timezone_abbreviation=abbreviation,
                utc_offset_seconds=offset,
                run_id=run.run_id,
                model=run.model_name,
                model_version=run.model_version,
            )
        )
    return points
