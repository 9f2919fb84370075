"""The HTTP API (FastAPI): ``/health``, ``/ready`` and the ``/v1`` routes, with their OpenAPI
document at ``/openapi.json`` (browsable at ``/docs``).

Routes are thin: they take the replica's state once per request from :class:`Service`, call the
point-forecast functions (:mod:`serve.openmeteo`) or the predictor, and answer. Every refusal
is ``{"error": true, "reason": ...}`` (see :mod:`serve.errors`).

With ``auth.required`` every ``/v1`` route first checks the API key (:mod:`serve.security`);
``/health``, ``/ready``, ``/openapi.json`` and ``/docs`` stay open. ``/ready`` answers 503 only
while the replica holds no forecast run or no model; a database or Redis outage leaves it 200
and is listed in its ``warnings`` (verified keys and point answers keep working from memory).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from pipelines.models.registry import ModelRecord
from schemas.model_card import ModelCard
from serve.errors import ApiError, bad_parameter, install_error_handlers
from serve.middleware import ObservedApp
from serve.openmeteo import BadRequest, answer, parse_query, to_flatbuffers, to_json
from serve.predict_io import (
    ARROW,
    JSON,
    NPY,
    NpyResponse,
    encode_arrow,
    encode_npy,
    media_type_of,
    parse_arrow,
    parse_json,
    parse_npy,
    read_body,
)
from serve.predict_request import PredictMeta, make_job, parse_init_time, parse_meta, valid_times
from serve.runs import HeldRun
from serve.security import key_dependency
from serve.service import Service

API_VERSION = "1"
RUN_HEADER = "X-Forecast-Run"
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "boolean"}, "reason": {"type": "string"}},
}


def _errors(texts: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"description": text, "content": {JSON: {"schema": ERROR_SCHEMA}}}
        for code, text in texts.items()
    }


ERRORS = _errors(
    {
        400: "a parameter is invalid (named in the reason)",
        404: "no such model",
        413: "the body is larger than the configured limit",
        503: "not ready, the model cannot be used, the service is overloaded or the API key "
        "cannot be checked now (Retry-After)",
    }
)
KEY_ERRORS = _errors(
    {
        401: "no API key, or one that is malformed or unknown",
        403: "the API key was revoked",
        429: "the API key's rate limit is exceeded (Retry-After)",
    }
)


def _query(
    name: str, description: str, required: bool = False, example: str | None = None
) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }
    if example is not None:
        parameter["example"] = example
    return parameter


FORECAST_PARAMETERS = [
    _query("latitude", "degrees north; a comma list for several points", True, "51.5"),
    _query("longitude", "degrees east; one per latitude", True, "-0.1"),
    _query(
        "hourly",
        "variables: temperature_2m, pressure_msl, t2m, temperature_850hPa...",
        True,
        "temperature_2m",
    ),
    _query("forecast_hours", "lead times of at most this many hours", example="6"),
    _query("temperature_unit", "celsius (default), fahrenheit or kelvin"),
    _query("timeformat", "iso8601 (default) or unixtime"),
    _query("timezone", "IANA name or GMT"),
    _query("cell_selection", "bilinear (default) or nearest"),
    _query("model", "name or name:version of the run's model"),
    _query("format", "json (default) or flatbuffers (application/octet-stream)"),
]
PREDICT_PARAMETERS = [
    _query("init_time", "binary bodies: UTC time of the last initial field, 2025-01-01T06:00Z"),
    _query("lead_hours", "binary bodies: lead times in hours, e.g. 1,6,12"),
    _query("model", "name:version or name; the default model when absent"),
]
PREDICT_BODY = {
    "required": True,
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["init_time", "lead_hours", "fields"],
                "properties": {
                    "model": {"type": "string"},
                    "init_time": {"type": "string", "format": "date-time"},
                    "lead_hours": {"type": "array", "items": {"type": "integer"}},
                    "fields": {
                        "type": "array",
                        "description": "nested lists [history, channels, lat, lon]",
                    },
                },
            }
        },
        NPY: {"schema": {"type": "string", "format": "binary"}},
        ARROW: {"schema": {"type": "string", "format": "binary"}},
    },
}


def _multi(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def _record_row(record: ModelRecord, default: str | None) -> dict[str, Any]:
    return {
        "name": record.name,
        "version": record.version,
        "id": f"{record.name}:{record.version}",
        "status": record.status,
        "default": default == f"{record.name}:{record.version}",
        "sha256": record.sha256,
        "registered_at": record.registered_at.isoformat(),
        "promoted_at": record.promoted_at.isoformat() if record.promoted_at else None,
        "retired_at": record.retired_at.isoformat() if record.retired_at else None,
    }


def _forecast(params: dict[str, list[str]], held: HeldRun, service: Service) -> Response:
    started = time.perf_counter()
    flat: dict[str, str | list[str]] = {k: v[0] if len(v) == 1 else v for k, v in params.items()}
    try:
        query = parse_query(flat, held.view, service.args.limits.query_limits())
    except BadRequest as exc:
        raise bad_parameter(exc.parameter, exc.reason) from exc
    points = answer(query, held.view)
    elapsed = (time.perf_counter() - started) * 1000.0
    headers = {RUN_HEADER: held.run_id}
    if query.format == "flatbuffers":
        body = to_flatbuffers(points, query, elapsed)
        return Response(body, media_type="application/octet-stream", headers=headers)
    return JSONResponse(to_json(points, query, elapsed), headers=headers)


async def _predict_input(request: Request, service: Service) -> tuple[str, PredictMeta, Any]:
    media = media_type_of(request)
    body = await read_body(request, service.args.limits.max_body_bytes)
    if media == JSON:
        parsed, fields = await asyncio.to_thread(parse_json, body)
        init_time = parse_init_time(parsed.init_time.isoformat())
        return media, PredictMeta(parsed.model, init_time, parsed.lead_hours), fields
    meta = parse_meta(_multi(request))
    decode = parse_npy if media == NPY else parse_arrow
    return media, meta, await asyncio.to_thread(decode, body)


def build_api(service: Service) -> FastAPI:
    """The FastAPI application of one ingress replica, answering from ``service``."""
    app = FastAPI(
        title="climate forecasts",
        version=API_VERSION,
        description="Point forecasts of the committed forecast run (Open-Meteo style) and "
        "on-demand model rollouts from caller-supplied initial fields.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(ObservedApp, metrics=service.metrics)
    guard = service.guard
    v1 = APIRouter(
        prefix="/v1",
        responses=ERRORS if guard is None else ERRORS | KEY_ERRORS,
        dependencies=[] if guard is None else [Depends(key_dependency(guard))],
    )

    @app.get("/health", summary="the process answers")
    async def health() -> dict[str, bool]:
        return {"alive": True}

    @app.get(
        "/ready",
        summary="a model is loaded and a forecast run is held (database or Redis outages are "
        "warnings, not unreadiness)",
        responses=ERRORS,
    )
    async def ready() -> dict[str, Any]:
        reasons = service.readiness()
        if reasons:
            raise ApiError(
                503, "not ready: " + "; ".join(reasons), extra={"ready": False, "reasons": reasons}
            )
        held, model = service.runs.current, service.models.current
        assert held is not None and model is not None
        return {
            "ready": True,
            "run_id": held.run_id,
            "run_committed_at": held.committed_at.isoformat(),
            "run_age_seconds": round(held.age_seconds, 3),
            "model": model.model_id,
            "replica": service.replica,
            "warnings": service.warnings(),
        }

    @v1.get(
        "/forecast",
        summary="hourly point forecasts from the committed run (Open-Meteo parameters)",
        openapi_extra={"parameters": FORECAST_PARAMETERS},
        responses={200: {"content": {JSON: {}, "application/octet-stream": {}}}},
    )
    async def forecast(request: Request) -> Response:
        held = service.held_run()  # one run for the whole request
        return await asyncio.to_thread(_forecast, _multi(request), held, service)

    @v1.post(
        "/predict",
        summary="roll a model out from caller-supplied initial fields",
        openapi_extra={"parameters": PREDICT_PARAMETERS, "requestBody": PREDICT_BODY},
        responses={200: {"content": {JSON: {}, NPY: {}, ARROW: {}}}},
    )
    async def predict(request: Request) -> Response:
        media, meta, fields = await _predict_input(request, service)
        model = await service.choose_model(meta.model)
        limit = service.args.limits.max_predict_lead_hours
        job, leads = make_job(model.card, fields, meta.init_time, meta.lead_hours, limit)
        out = await service.predict(model, job)
        init_time = meta.init_time.isoformat()
        if media == JSON:
            return JSONResponse(
                {
                    "model": model.model_id,
                    "init_time": init_time,
                    "lead_hours": leads,
                    "valid_times": valid_times(meta.init_time, leads),
                    "channels": model.card.channel_names,
                    "fields": out.tolist(),
                }
            )
        headers = {
            "X-Model": model.model_id,
            "X-Init-Time": init_time,
            "X-Lead-Hours": ",".join(str(lead) for lead in leads),
            "X-Channels": ",".join(model.card.channel_names),
        }
        if media == NPY:
            return NpyResponse(encode_npy(out), headers=headers)
        metadata = {"model": model.model_id, "init_time": init_time, "lead_hours": leads}
        metadata["channels"] = model.card.channel_names
        body = await asyncio.to_thread(encode_arrow, out, leads, metadata)
        return Response(body, media_type=ARROW, headers=headers)

    @v1.get("/models", summary="registered model versions")
    async def models(name: str | None = None) -> dict[str, Any]:
        default = service.models.current
        default_id = default.model_id if default else None
        if service.args.model.kind == "file":
            rows = [] if default is None else [_file_row(default.card, default_id)]
            return {"default": default_id, "models": rows}
        records = await service.records(name)
        return {"default": default_id, "models": [_record_row(r, default_id) for r in records]}

    @v1.get("/models/{name}/{version}", summary="one model version and its card")
    async def model(name: str, version: str) -> dict[str, Any]:
        default = service.models.current
        default_id = default.model_id if default else None
        if service.args.model.kind == "file":
            if default is None or default.model_id != f"{name}:{version}":
                raise ApiError(404, f"model {name}:{version} is not served here")
            return {**_file_row(default.card, default_id), "card": _card(default.card)}
        record = await service.record(name, version)
        return {**_record_row(record, default_id), "card": _card(record.card)}

    app.include_router(v1)
    return app


def _card(card: ModelCard) -> dict[str, Any]:
    dumped: dict[str, Any] = card.model_dump(mode="json")
    return dumped


def _file_row(card: ModelCard, default: str | None) -> dict[str, Any]:
    model = f"{card.name}:{card.version}"
    return {
        "name": card.name,
        "version": card.version,
        "id": model,
        "status": "file",
        "default": default == model,
        "sha256": card.sha256,
    }
