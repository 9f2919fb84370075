"""The point-forecast API in the manner of Open-Meteo (https://open-meteo.com/en/docs).

Pure functions the Serve app calls, no web framework::

    run = RunView.from_dataset(open_forecast_store(url))      # newest initial time, in memory
    query = parse_query(request.query_params, run, limits)    # BadRequest -> HTTP 400
    points = answer(query, run)
    body = to_json(points, query, ms) if query.format == "json" else to_flatbuffers(...)

or :func:`respond`, which does all of it and says what to send. Differences from Open-Meteo:
only ``hourly`` is answered (and is required); times start at the run's first lead time rather
than local midnight; ``timezone=auto`` answers in GMT; bilinear interpolation is the default
(``cell_selection=nearest`` takes the grid cell, whose centre is then the reported location);
pressures stay in Pa and winds in m/s (the lexicon's units), in JSON as in FlatBuffers;
``elevation`` is unknown (JSON null, FlatBuffers NaN).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from schemas.forecast_api import ErrorJson, PointForecastJson, PointQuery, QueryLimits
from serve.openmeteo_flatbuffers import to_flatbuffers
from serve.point_answer import PointForecast, RunView, answer
from serve.point_query import BadRequest, parse_query

__all__ = [
    "BadRequest",
    "PointForecast",
    "QueryLimits",
    "Reply",
    "RunView",
    "answer",
    "parse_query",
    "respond",
    "to_flatbuffers",
    "to_json",
]


def _json_values(values: np.ndarray) -> list[float | None]:
    """float32 values as the shortest decimals that read back to the same float32; NaN: None."""
    as_float32 = np.asarray(values, dtype=np.float32)
    decimals = as_float32.astype(str).astype(np.float64).tolist()
    return [None if np.isnan(v) else v for v in decimals]


def _one(point: PointForecast, query: PointQuery, generation_ms: float) -> dict[str, object]:
    hourly: dict[str, list[float | None] | list[int] | list[str]] = {"time": point.times}
    hourly.update({name: _json_values(values) for name, values in point.values.items()})
    return PointForecastJson(
        latitude=point.latitude,
        longitude=point.longitude,
        generationtime_ms=generation_ms,
        utc_offset_seconds=point.utc_offset_seconds,
        timezone=point.timezone,
        timezone_abbreviation=point.timezone_abbreviation,
        elevation=None,
        hourly_units={"time": query.timeformat, **point.units},
        hourly=hourly,
        run_id=point.run_id,
        model=point.model,
        model_version=point.model_version,
    ).model_dump()


def to_json(
    points: list[PointForecast], query: PointQuery, generation_ms: float
) -> dict[str, object] | list[dict[str, object]]:
    """The JSON answer in Open-Meteo's shape: one object, or a list for several locations.

    Parameters
    ----------
    points
        :func:`answer`'s result for ``query``.
    query
        The parsed query.
    generation_ms
        Time spent answering (``generationtime_ms``).

    Returns
    -------
    dict or list of dict
        ``latitude``, ``longitude`` (the requested point for bilinear, the grid cell for
        nearest), ``generationtime_ms``, ``utc_offset_seconds``, ``timezone``,
        ``timezone_abbreviation``, ``elevation`` (None), ``hourly_units``, ``hourly`` (``time``
        and one list per variable, keyed by the name asked; None where missing), ``run_id``,
        ``model``, ``model_version``. Values are the shortest decimals of the float32 values,
        so they read back to exactly what the FlatBuffers answer holds.
    """
    bodies = [_one(point, query, generation_ms) for point in points]
    return bodies[0] if len(query.latitudes) == 1 else bodies


@dataclass(frozen=True)
class Reply:
    """What to send: HTTP status, media type and body."""

    status: int
    media_type: str
    body: bytes | dict[str, object] | list[dict[str, object]]


def respond(params: Mapping[str, str | list[str]], run: RunView, limits: QueryLimits) -> Reply:
    """Answer one query string: parse, interpolate, encode; a bad parameter gives a 400.

    Parameters
    ----------
    params, run, limits
        As for :func:`parse_query`.

    Returns
    -------
    Reply
        200 with the JSON object/list (``application/json``) or the FlatBuffers bytes
        (``application/octet-stream``); 400 with Open-Meteo's ``{"error": true, "reason": ...}``.
    """
    started = time.perf_counter()
    try:
        query = parse_query(params, run, limits)
    except BadRequest as exc:
        return Reply(400, "application/json", ErrorJson(reason=exc.reason).model_dump())
    points = answer(query, run)
    elapsed = (time.perf_counter() - started) * 1000.0
    if query.format == "flatbuffers":
        return Reply(200, "application/octet-stream", to_flatbuffers(points, query, elapsed))
    return Reply(200, "application/json", to_json(points, query, elapsed))
