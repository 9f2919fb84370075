"""The point-forecast API in the manner of Open-Meteo: its limits, a parsed query, a JSON answer.

``serve/point_query.py`` turns the query string into a :class:`PointQuery`;
``serve/openmeteo.py`` writes one :class:`PointForecastJson` per location.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TemperatureUnit = Literal["celsius", "fahrenheit", "kelvin"]
TimeFormat = Literal["iso8601", "unixtime"]
CellSelection = Literal["bilinear", "nearest"]
ResponseFormat = Literal["json", "flatbuffers"]


class QueryLimits(BaseModel):
    """What one request may ask for (set by the Serve app's configuration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_locations: int = Field(default=100, ge=1)
    max_forecast_hours: int = Field(default=240, ge=1)


class RequestedVariable(BaseModel):
    """One variable of ``hourly=``: the name as asked and the run's field it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # as requested (``temperature_2m``): the key of the answer
    field: str  # the run's field (``t2m``, ``t_850hPa``)
    lexicon: str  # the lexicon's short name (``t2m``, ``t``)
    level: int | None = None  # pressure level in hPa, for fields of a level


class PointQuery(BaseModel):
    """A parsed and validated point-forecast query (every value already checked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latitudes: tuple[float, ...]
    longitudes: tuple[float, ...]  # in [-180, 180)
    variables: tuple[RequestedVariable, ...]
    lead_hours: tuple[int, ...]  # the run's lead times answered, ascending
    temperature_unit: TemperatureUnit = "celsius"
    timeformat: TimeFormat = "iso8601"
    timezone: str = "GMT"  # an IANA name, or GMT
    cell_selection: CellSelection = "bilinear"
    format: ResponseFormat = "json"
    model: str | None = None  # as asked (``name`` or ``name:version``); None: not asked


class PointForecastJson(BaseModel):
    """One location of the JSON answer, in Open-Meteo's shape plus the run's identity.

    ``latitude``/``longitude`` are the grid cell's centre for ``nearest`` and the requested point
    for ``bilinear`` (whose values are those of that point). ``elevation`` is None: the model
    has no orography. Missing values are None.
    """

    model_config = ConfigDict(extra="forbid")

    latitude: float
    longitude: float
    generationtime_ms: float
    utc_offset_seconds: int
    timezone: str
    timezone_abbreviation: str
    elevation: float | None = None
    hourly_units: dict[str, str]
    hourly: dict[str, list[float | None] | list[int] | list[str]]
    run_id: str
    model: str
    model_version: str


class ErrorJson(BaseModel):
    """Open-Meteo's error body (HTTP 400)."""

    model_config = ConfigDict(extra="forbid")

    error: bool = True
    reason: str
