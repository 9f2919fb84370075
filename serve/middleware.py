"""The outermost layer of the API: counts and times every request, adds the headers a
dependency left for the response (:func:`add_response_headers`), and turns an unexpected
exception into a 500 with a generic reason (the trace goes to the log, never to the caller)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import error_body
from serve.metrics import ServeMetrics

log = logging.getLogger(__name__)
INTERNAL_REASON = "internal error; the server logged it"
_HEADERS_STATE = "climate_response_headers"


def add_response_headers(request: Request, headers: dict[str, str]) -> None:
    """Headers for the response to ``request``, whatever response the route returns.

    FastAPI merges a dependency's ``Response`` headers only into responses it builds itself,
    not into a ``Response`` a route returns; these are added by :class:`ObservedApp`.
    """
    state: dict[str, Any] = request.scope.setdefault("state", {})  # what request.state holds
    pending: dict[str, str] = state.setdefault(_HEADERS_STATE, {})
    pending.update(headers)


def _with_pending_headers(scope: Scope, message: Message) -> Message:
    pending = (scope.get("state") or {}).get(_HEADERS_STATE)
    if not pending:
        return message
    present = {name.lower() for name, _ in message.get("headers", [])}
    extra = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in pending.items()
        if name.lower().encode("latin-1") not in present
    ]
    return {**message, "headers": [*message.get("headers", []), *extra]}


def route_of(scope: Scope) -> str:
    """The route template that answered (``/v1/models/{name}/{version}``), for metric tags."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class ObservedApp:
    """ASGI wrapper: metrics by route and status, and a 500 for anything left unhandled."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500, "sent": False}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                message = _with_pending_headers(scope, message)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:  # the last resort of the API: logged with its trace, answered 500
            log.exception("unhandled error answering %s %s", scope.get("method"), scope["path"])
            status["code"] = 500
            if not status["sent"]:
                await _send_internal_error(send)
        finally:
            route = route_of(scope)
            self.metrics.requests.inc(tags={"route": route, "status": str(status["code"])})
            self.metrics.latency.observe(time.perf_counter() - started, tags={"route": route})


async def _send_internal_error(send: Send) -> None:
    body = json.dumps(error_body(INTERNAL_REASON)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
