"""Parse and check a point-forecast query string (Open-Meteo's parameters) against a run."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import numpy as np

from pipelines.errors import ClimateError
from schemas.forecast_api import (
    CellSelection,
    PointQuery,
    QueryLimits,
    RequestedVariable,
    ResponseFormat,
    TemperatureUnit,
    TimeFormat,
)
from schemas.variables import VARIABLES, canonical_name
from serve.point_answer import RunView, field_name, split_field

# Open-Meteo's names of the lexicon's variables (single level, then per pressure level).
OPEN_METEO_NAMES = {
    "temperature_2m": "t2m",
    "pressure_msl": "msl",
    "surface_pressure": "sp",
    "wind_u_component_10m": "u10",
    "wind_v_component_10m": "v10",
}
OPEN_METEO_LEVEL_NAMES = {"temperature": "t", "wind_u_component": "u", "wind_v_component": "v"}
_ALIAS_OF = {v: k for k, v in OPEN_METEO_NAMES.items()}
_LEVEL_ALIAS_OF = {v: k for k, v in OPEN_METEO_LEVEL_NAMES.items()}
_LEVEL_NAME = re.compile(r"^(?P<name>[a-z0-9_]+?)_(?P<level>\d+)hpa$")
_UTC_NAMES = {"gmt", "utc", "auto", "etc/utc", "etc/gmt", "z"}


class BadRequest(ClimateError, ValueError):  # noqa: N818 (the HTTP status it stands for)
    """A query parameter is invalid: HTTP 400 with Open-Meteo's ``{error, reason}`` body."""

    status = 400

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(reason)
        self.parameter = parameter
        self.reason = reason


def _raw(params: Mapping[str, str | list[str]], name: str) -> list[str] | None:
    value = params.get(name)
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _scalar(params: Mapping[str, str | list[str]], name: str) -> str | None:
    values = _raw(params, name)
    if not values:
        return None
    distinct = sorted({v.strip() for v in values})
    if len(distinct) > 1:
        raise BadRequest(name, f"{name} was given {len(values)} times ({distinct}); give it once")
    return distinct[0] or None


def _listed(params: Mapping[str, str | list[str]], name: str) -> list[str] | None:
    values = _raw(params, name)
    return None if values is None else [i.strip() for v in values for i in v.split(",")]


def _choice(params: Mapping[str, str | list[str]], name: str, allowed: tuple[str, ...]) -> str:
    value = _scalar(params, name)
    if value is None or value.lower() in allowed:
        return allowed[0] if value is None else value.lower()
    raise BadRequest(name, f"{name}={value!r} is not supported; use one of {', '.join(allowed)}")


def _coordinates(params: Mapping[str, str | list[str]], name: str, bound: float) -> list[float]:
    items = _listed(params, name)
    if not items or items == [""]:
        raise BadRequest(name, f"{name} is missing; give {name}=<degrees> (or a comma list)")
    out = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise BadRequest(name, f"{name}={item!r} is not a number; give decimal degrees")
        if not -bound <= value <= bound:
            raise BadRequest(
                name, f"{name}={item} is outside [-{bound:g}, {bound:g}]; give degrees within it"
            )
        out.append(value)
    return out


def _catalogue(run: RunView) -> str:
    names = []
    for name in run.fields:
        lexicon, level = split_field(name)
        alias = _ALIAS_OF.get(lexicon) if level is None else _LEVEL_ALIAS_OF.get(lexicon)
        suffix = "" if level is None else f"_{level}hPa"
        names.append(f"{name} ({alias}{suffix})" if alias else name)
    return ", ".join(names)


def _resolve(asked: str, run: RunView) -> RequestedVariable:
    """One name of ``hourly=``: a run's field, an Open-Meteo name or a lexicon alias."""
    low = asked.lower()
    wanted: tuple[str, int | None] | None = None
    by_field = {name.lower(): name for name in run.fields}
    if low in by_field:
        wanted = split_field(by_field[low])
    elif low in OPEN_METEO_NAMES:
        wanted = (OPEN_METEO_NAMES[low], None)
    elif (found := _LEVEL_NAME.match(low)) and (
        lexicon := OPEN_METEO_LEVEL_NAMES.get(found["name"]) or canonical_name(found["name"])
    ):
        wanted = (lexicon, int(found["level"]))
    elif canonical_name(low):
        wanted = (str(canonical_name(low)), None)
    if wanted is None:
        known = ", ".join(sorted(VARIABLES)) + ", " + ", ".join(sorted(OPEN_METEO_NAMES))
        raise BadRequest(
            "hourly",
            f"hourly={asked!r} is not a variable this API knows ({known}); ask for one "
            f"this run holds: {_catalogue(run)}",
        )
    name = field_name(*wanted)
    if name not in run.fields:
        raise BadRequest(
            "hourly",
            f"hourly={asked!r} ({name}) is not in run {run.run_id} of model {run.model_name}; "
            f"ask for one it holds: {_catalogue(run)}",
        )
    return RequestedVariable(name=asked, field=name, lexicon=wanted[0], level=wanted[1])


@lru_cache(maxsize=1)
def _zones_by_lower_name() -> dict[str, str]:
    return {zone.lower(): zone for zone in available_timezones()}


def _timezone(params: Mapping[str, str | list[str]]) -> str:
    value = _scalar(params, "timezone")
    if value is None or value.lower() in _UTC_NAMES:
        return "GMT"
    zone = _zones_by_lower_name().get(value.lower())
    try:
        ZoneInfo(zone or value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequest(
            "timezone",
            f"timezone={value!r} is not a known time zone; use an IANA name such as "
            "Europe/London, or GMT, or auto (answered in GMT)",
        ) from exc
    return zone or value


def _model(params: Mapping[str, str | list[str]], run: RunView) -> str | None:
    name = "model" if "model" in params else "models"
    value = _scalar(params, name)
    if value is None or value in ("", "best_match"):
        return value or None
    asked, _, version = value.partition(":")
    if asked != run.model_name or (version and version != run.model_version):
        raise BadRequest(
            name,
            f"{name}={value!r} is not served here; this server answers from model "
            f"{run.model_name}:{run.model_version}: ask for {name}={run.model_name} or leave "
            "it out",
        )
    return value


def _lead_hours(
    params: Mapping[str, str | list[str]], run: RunView, limits: QueryLimits
) -> tuple[int, ...]:
    leads = [int(h) for h in run.lead_hours.tolist()]
    given = _scalar(params, "forecast_hours")
    value = given or str(limits.max_forecast_hours)
    if not value.isdigit() or int(value) < 1:
        raise BadRequest(
            "forecast_hours",
            f"forecast_hours={value!r} is not a positive whole number of hours; give one from "
            f"1 to {min(max(leads), limits.max_forecast_hours)}",
        )
    hours = int(value)
    if hours > limits.max_forecast_hours:
        raise BadRequest(
            "forecast_hours",
            f"forecast_hours={hours} is more than this server answers; ask for at most "
            f"{limits.max_forecast_hours}",
        )
    chosen = tuple(h for h in leads if h <= hours)
    if (given and hours > max(leads)) or not chosen:
        raise BadRequest(
            "forecast_hours",
            f"forecast_hours={hours} is outside run {run.run_id}, whose lead times are "
            f"{min(leads)} to {max(leads)} h; ask for a value in that range",
        )
    return chosen


def _check_domain(run: RunView, lats: list[float], lons: list[float]) -> None:
    north, south = float(run.lat.max()), float(run.lat.min())
    west, east = float(run.lon.min()), float(run.lon.max())
    box = f"lat {south:g} to {north:g}, lon {west:g} to {east:g}"
    for lat, lon in zip(lats, lons, strict=True):
        outside = "latitude" if not south <= lat <= north else None
        if outside is None and not run.global_lon and not west <= lon <= east:
            outside = "longitude"
        if outside:
            raise BadRequest(
                outside,
                f"latitude={lat:g}, longitude={lon:g} is outside the domain of model "
                f"{run.model_name} ({box}); ask for a point inside it",
            )


def parse_query(
    params: Mapping[str, str | list[str]], run: RunView, limits: QueryLimits
) -> PointQuery:
    """Parse Open-Meteo-style query parameters into a :class:`PointQuery` checked against a run.

    Parameters
    ----------
    params
        The query string: one value per name, or a list of values for a repeated name.
        Understood: ``latitude``, ``longitude`` (one value or comma lists of equal length),
        ``hourly`` (required: lexicon names such as ``t2m``, Open-Meteo names such as
        ``temperature_2m``, ``pressure_msl``, ``temperature_850hPa``), ``forecast_hours``
        (lead times of at most that many hours; default every lead up to the limit),
        ``temperature_unit`` (celsius, fahrenheit, kelvin), ``timeformat`` (iso8601,
        unixtime), ``timezone`` (IANA name, GMT/UTC, or auto, answered in GMT), ``model`` or
        ``models`` (``name`` or ``name:version`` of the run's model), ``cell_selection`` or
        ``interpolation`` (bilinear, nearest) and ``format`` (json, flatbuffers).
        Every other parameter (``apikey``, ``daily``, ``forecast_days``...) is ignored, as
        Open-Meteo ignores parameters it does not know.
    run
        The run that will answer.
    limits
        How many locations and forecast hours one query may ask for.

    Raises
    ------
    BadRequest
        A parameter is missing or invalid; ``parameter`` names it and the message says
        the value found and what to give instead.
    """
    lats = _coordinates(params, "latitude", 90.0)
    lons = _coordinates(params, "longitude", 180.0)
    if len(lats) != len(lons):
        raise BadRequest(
            "longitude",
            f"latitude has {len(lats)} values and longitude {len(lons)}; give one longitude "
            "per latitude",
        )
    if len(lats) > limits.max_locations:
        raise BadRequest(
            "latitude",
            f"latitude/longitude give {len(lats)} locations; ask for at most "
            f"{limits.max_locations} per request",
        )
    lons = [lon - 360.0 if lon >= 180.0 else lon for lon in lons]
    _check_domain(run, lats, lons)
    names = [n for n in _listed(params, "hourly") or [] if n]
    if not names:
        raise BadRequest(
            "hourly", f"hourly is missing or empty; ask for some of: {_catalogue(run)}"
        )
    variables = tuple(_resolve(name, run) for name in dict.fromkeys(names))
    cell = _choice(params, "cell_selection", get_args(CellSelection))
    method = _choice(params, "interpolation", get_args(CellSelection))
    if "cell_selection" in params and "interpolation" in params and cell != method:
        raise BadRequest(
            "interpolation",
            f"cell_selection={cell} and interpolation={method} disagree; give one of them",
        )
    lead_hours = _lead_hours(params, run, limits)
    fmt = _choice(params, "format", get_args(ResponseFormat))
    steps = set(np.diff(np.asarray(lead_hours)).tolist())
    if fmt == "flatbuffers" and len(steps) > 1:
        raise BadRequest(
            "format",
            f"format=flatbuffers needs evenly spaced times, and run {run.run_id}'s lead "
            f"times {list(lead_hours)} are not; ask for format=json",
        )
    return PointQuery.model_validate(
        {
            "latitudes": lats,
            "longitudes": lons,
            "variables": variables,
            "lead_hours": lead_hours,
            "temperature_unit": _choice(params, "temperature_unit", get_args(TemperatureUnit)),
            "timeformat": _choice(params, "timeformat", get_args(TimeFormat)),
            "timezone": _timezone(params),
            "cell_selection": cell if "cell_selection" in params else method,
            "format": fmt,
            "model": _model(params, run),
        }
    )
