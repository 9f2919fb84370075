"""The point answer as Open-Meteo's FlatBuffers response, which its official clients decode.

The body is one size-prefixed ``WeatherApiResponse`` message per location, back to back: a
4-byte little-endian length, then the message (``Builder.FinishSizePrefixed``). That is the
framing ``openmeteo_requests`` splits (``Client._process_response``). The schema's readers come
with the ``openmeteo-sdk`` package, which has no builders: the tables are built here by slot,
in the schema's field order (``openmeteo_sdk/*.py`` show each field's vtable offset).

Values are those of the JSON answer, as float32: temperatures in the unit asked, every other
variable in its lexicon unit (pressures in Pa, ``Unit.pascal``). Times are unix seconds (UTC):
``time``, ``time_end`` (exclusive) and ``interval``; local time is ``time + utc_offset_seconds``.
The model is ``Model.undefined``: the SDK's enum names Open-Meteo's models only.
"""

from __future__ import annotations

import math

import flatbuffers
import numpy as np
from openmeteo_sdk.Model import Model
from openmeteo_sdk.Unit import Unit
from openmeteo_sdk.Variable import Variable

from schemas.forecast_api import PointQuery, RequestedVariable
from serve.point_answer import HOUR, PointForecast, unit_of

# lexicon name -> (Open-Meteo variable, altitude in metres or None)
VARIABLES: dict[str, tuple[int, int | None]] = {
    "t2m": (Variable.temperature, 2),
    "u10": (Variable.wind_u_component, 10),
    "v10": (Variable.wind_v_component, 10),
    "msl": (Variable.pressure_msl, None),
    "sp": (Variable.surface_pressure, None),
    "t": (Variable.temperature, None),
    "u": (Variable.wind_u_component, None),
    "v": (Variable.wind_v_component, None),
    # z (geopotential, not geopotential height) and q have no Open-Meteo variable.
}
UNITS: dict[str, int] = {
    "°C": Unit.celsius,
    "°F": Unit.fahrenheit,
    "K": Unit.kelvin,
    "Pa": Unit.pascal,
    "m/s": Unit.metre_per_second,
    "m²/s²": Unit.joule_per_kilogram,
    "kg/kg": Unit.dimensionless,
}

# Slots (field index in the schema) of the tables written.
_RESPONSE_FIELDS = 15  # WeatherApiResponse: latitude .. weekly
_LATITUDE, _LONGITUDE, _ELEVATION, _GENERATION_MS, _LOCATION_ID, _MODEL = range(6)
_UTC_OFFSET, _TIMEZONE, _TIMEZONE_ABBREVIATION, _HOURLY = 6, 7, 8, 11
_TIME_FIELDS = 4  # VariablesWithTime: time, time_end, interval, variables
_TIME, _TIME_END, _INTERVAL, _VARIABLES = range(4)
_VALUE_FIELDS = 13  # VariableWithValues: variable .. probability
_VARIABLE, _UNIT, _VALUES, _ALTITUDE, _PRESSURE_LEVEL = 0, 1, 3, 5, 7


def _variable(
    builder: flatbuffers.Builder, variable: RequestedVariable, unit: str, values: np.ndarray
) -> int:
    kind, altitude = VARIABLES.get(variable.lexicon, (Variable.undefined, None))
    vector = builder.CreateNumpyVector(np.ascontiguousarray(values, dtype="<f4"))
    builder.StartObject(_VALUE_FIELDS)
    builder.PrependUint8Slot(_VARIABLE, kind, 0)
    builder.PrependUint8Slot(_UNIT, UNITS.get(unit, Unit.undefined), 0)
    builder.PrependUOffsetTRelativeSlot(_VALUES, vector, 0)
    if altitude is not None:
        builder.PrependInt16Slot(_ALTITUDE, altitude, 0)
    if variable.level is not None:
        builder.PrependInt16Slot(_PRESSURE_LEVEL, variable.level, 0)
    return int(builder.EndObject())


def _hourly(builder: flatbuffers.Builder, point: PointForecast, query: PointQuery) -> int:
    tables = [
        _variable(builder, v, unit_of(v, query.temperature_unit), point.values[v.name])
        for v in query.variables
    ]
    builder.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        builder.PrependUOffsetTRelative(table)
    variables = builder.EndVector()
    valid = np.asarray(point.valid_seconds, dtype=np.int64)
    interval = int(valid[1] - valid[0]) if len(valid) > 1 else HOUR
    builder.StartObject(_TIME_FIELDS)
    builder.PrependInt64Slot(_TIME, int(valid[0]), 0)
    builder.PrependInt64Slot(_TIME_END, int(valid[-1]) + interval, 0)
    builder.PrependInt32Slot(_INTERVAL, interval, 0)
    builder.PrependUOffsetTRelativeSlot(_VARIABLES, variables, 0)
    return int(builder.EndObject())


def _message(point: PointForecast, query: PointQuery, index: int, generation_ms: float) -> bytes:
    builder = flatbuffers.Builder(1024)
    timezone = builder.CreateString(point.timezone)
    abbreviation = builder.CreateString(point.timezone_abbreviation)
    hourly = _hourly(builder, point, query)
    builder.StartObject(_RESPONSE_FIELDS)
    builder.PrependFloat32Slot(_LATITUDE, point.latitude, 0.0)
    builder.PrependFloat32Slot(_LONGITUDE, point.longitude, 0.0)
    builder.PrependFloat32Slot(_ELEVATION, math.nan, 0.0)
    builder.PrependFloat32Slot(_GENERATION_MS, generation_ms, 0.0)
    builder.PrependInt64Slot(_LOCATION_ID, index, 0)
    builder.PrependUint8Slot(_MODEL, Model.undefined, 0)
    builder.PrependInt32Slot(_UTC_OFFSET, point.utc_offset_seconds, 0)
    builder.PrependUOffsetTRelativeSlot(_TIMEZONE, timezone, 0)
    builder.PrependUOffsetTRelativeSlot(_TIMEZONE_ABBREVIATION, abbreviation, 0)
    builder.PrependUOffsetTRelativeSlot(_HOURLY, hourly, 0)
    builder.FinishSizePrefixed(builder.EndObject())
    return bytes(builder.Output())


def to_flatbuffers(points: list[PointForecast], query: PointQuery, generation_ms: float) -> bytes:
    """The FlatBuffers body of an answer: one size-prefixed message per location, in order.

    Parameters
    ----------
    points
        :func:`serve.point_answer.answer`'s result for ``query``.
    query
        The parsed query (its variables give the order and the units).
    generation_ms
        Time spent answering, written as ``generation_time_milliseconds``.

    Returns
    -------
    bytes
        What ``openmeteo_requests`` decodes into one ``WeatherApiResponse`` per location
        (``location_id`` is the location's position in the request).
    """
    return b"".join(
        _message(point, query, index, generation_ms) for index, point in enumerate(points)
    )
