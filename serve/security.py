"""API keys and rate limits on the ``/v1`` routes of one ingress replica.

:func:`build_guard` makes the replica's :class:`~serve.auth.Guard` once, from the ``auth``
section of the arguments: the key store over ``DATABASE_URL`` (its cache keeps verified keys
working through a database outage) and the token buckets in Redis at ``REDIS_URL`` (in-process
when unset, or while Redis is out; each outage is logged once and counted in
``climate_serve_rate_limit_degraded_total``). Offline (``climate serve --offline``) the keys
are the hashes ``climate sync`` copied (``auth.keys_file``) and the buckets stay in-process;
neither the database nor Redis is contacted. :func:`key_dependency` is the FastAPI dependency
of the ``/v1`` router: it checks the ``apikey`` query parameter or the ``Authorization: Bearer``
header before the route runs and documents both schemes in the OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from pipelines.api_keys import ApiKeys
from pipelines.db import make_engine
from pipelines.errors import SinkError
from pipelines.sync.keys import keys_engine
from schemas.serve_config import AuthOptions
from schemas.settings import Settings
from serve.auth import QUERY_PARAMETER, Guard, Refused
from serve.errors import ApiError
from serve.metrics import ServeMetrics
from serve.middleware import add_response_headers
from serve.rate_limit import RateLimiter, build_rate_limiter

log = logging.getLogger(__name__)

KEY_HELP = "an API key from `climate keys create NAME` (ck_<key id>_<secret>)"
API_KEY_QUERY = APIKeyQuery(
    name=QUERY_PARAMETER,
    scheme_name="apikey",
    description=f"{KEY_HELP}, as the apikey query parameter (as Open-Meteo's clients send it)",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="bearer",
    description=f"{KEY_HELP}, as Authorization: Bearer <key>",
    auto_error=False,
)


def build_guard(
    auth: AuthOptions, settings: Settings, metrics: ServeMetrics, offline: bool = False
) -> Guard | None:
    """The replica's key checks and rate limits; ``None`` when ``auth.required`` is false.

    Parameters
    ----------
    auth
        The ``auth`` section of the application's arguments.
    settings
        ``DATABASE_URL`` (the ``api_keys`` table, migrated by ``climate keys``) and
        ``REDIS_URL`` (unset: rate limits per replica).
    metrics
        The replica's metrics; each Redis outage increments ``rate_limit_degraded``.
    offline
        Never contact Redis: rate limits are kept in this replica (keys come from
        ``auth.keys_file``, which :class:`ServeArgs` requires offline).

    Returns
    -------
    Guard | None
        The guard; nothing connects yet, so a database or Redis that is down at start-up
        does not stop the replica.

    Raises
    ------
    ConfigError
        ``DATABASE_URL`` or ``REDIS_URL`` is malformed, or the keys file cannot be loaded.
    """
    if not auth.required:
        unauthenticated = "the offline service is unauthenticated: " if offline else ""
        log.warning(
            "%sauth.required is false: the /v1 routes answer without an API key", unauthenticated
        )
        return None

    def count_database_error(_error: SinkError) -> None:
        metrics.database_errors.inc(tags={"component": "api_keys"})

    on_database_error: Callable[[SinkError], None] | None = None
    if auth.keys_file is not None:
        engine = keys_engine(auth.keys_file)
        log.info("API keys from %s (keys revoked after it was written still pass)", auth.keys_file)
    else:  # offline arguments always name a keys file (ServeArgs checks it)
        engine = make_engine(settings.database_url, check=False)
        on_database_error = count_database_error
    keys = ApiKeys(
        engine,
        cache_ttl_s=auth.key_cache_seconds,
        max_stale_s=auth.key_stale_seconds,
        on_database_error=on_database_error,
    )

    def on_outage(_description: str) -> None:
        metrics.rate_limit_degraded.inc()

    if offline:
        log.info("offline: rate limits are kept per replica, in-process (Redis is not used)")
        limiter = RateLimiter(
            None,
            default_per_minute=auth.default_rate_per_minute,
            cooldown_s=auth.redis_retry_seconds,
            on_outage=on_outage,
        )
    else:
        limiter = build_rate_limiter(
            settings,
            default_per_minute=auth.default_rate_per_minute,
            cooldown_s=auth.redis_retry_seconds,
            on_outage=on_outage,
        )
    return Guard(keys, limiter)


def guard_warnings(guard: Guard | None) -> list[str]:
    """What ``/ready`` reports about the guard's database and Redis (not reasons to be unready)."""
    if guard is None:
        return []
    warnings = []
    if guard.database_down:
        warnings.append(
            "API keys database unreachable: only keys this replica verified in the last "
            f"{guard.keys.max_stale_s:g} s are accepted"
        )
    if guard.limiter.degraded:
        warnings.append("Redis unreachable: rate limits are kept per replica")
    return warnings


def key_dependency(guard: Guard) -> Callable[..., None]:
    """The FastAPI dependency that lets a ``/v1`` request through or answers its refusal.

    It is a plain ``def``: FastAPI runs it in the thread pool, where the database and Redis
    round trips of :meth:`Guard.check` may block. Refusals are :class:`ApiError` (401, 403,
    429 with ``Retry-After``, 503 with ``Retry-After`` when a key cannot be checked); an
    allowed request gets the ``X-RateLimit-*`` headers.
    """

    def require_key(
        request: Request,
        _query: Annotated[str | None, Security(API_KEY_QUERY)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> None:
        verdict = guard.check(request.query_params, request.headers)
        if isinstance(verdict, Refused):
            raise ApiError(verdict.status, verdict.reason, headers=verdict.headers)
        add_response_headers(request, verdict.headers)

    return require_key
