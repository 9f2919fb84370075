"""HTTP errors of the API: ``{"error": true, "reason": ...}`` with a status, never a stack trace.

Routes raise :class:`ApiError`; :func:`install_error_handlers` turns it, FastAPI's validation
errors and Starlette's HTTP errors (unknown route, wrong method) into that body. Anything else
is answered 500 with a generic reason by :mod:`serve.middleware`, which logs the trace.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import ClimateError


class ApiError(ClimateError):
    """An answer other than 200: HTTP status and the reason shown to the caller.

    Parameters
    ----------
    status
        400 (bad parameter), 404, 413, 503...
    reason
        What was wrong and what to send instead; for a 400, names the parameter.
    headers
        Extra response headers.
    extra
        More fields of the JSON body (``/ready`` adds its reasons).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.extra = extra or {}


def bad_parameter(parameter: str, reason: str) -> ApiError:
    """A 400 naming the parameter."""
    return ApiError(400, f"parameter {parameter}: {reason}")


def error_body(reason: str, **extra: Any) -> dict[str, Any]:
    """The error body every non-200 answer has."""
    return {"error": True, "reason": reason, **extra}


def error_response(
    status: int, reason: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A JSON error response."""
    return JSONResponse(error_body(reason, **extra), status_code=status, headers=headers)


def remote_reason(exc: BaseException) -> str:
    """The message of an error raised in another replica, without its remote traceback."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return str(exc.cause)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.reason, exc.headers, **exc.extra)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = [str(part) for part in error.get("loc", ()) if part not in {"query", "path"}]
        problems.append(f"parameter {'.'.join(where) or '?'}: {error.get('msg', 'invalid')}")
    return error_response(400, "; ".join(problems) or "invalid request")


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = exc.detail if isinstance(exc.detail, str) else "request refused"
    return error_response(exc.status_code, reason, dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    """Answer ApiError, validation errors and HTTP errors with the JSON error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
