"""API-key checks and rate limits for the online API, free of any web framework.

:func:`api_key_from` finds the key a request carries: the ``apikey`` query parameter (as
Open-Meteo's clients send it) or an ``Authorization: Bearer <key>`` header. :class:`Guard`
verifies it (:class:`pipelines.api_keys.ApiKeys`) and takes a token from its bucket
(:class:`serve.rate_limit.RateLimiter`), and returns :class:`Allowed` or :class:`Refused`: the
status, headers and body of the error response (``{"error": true, "reason": "..."}``). No
message holds a presented key or a stack trace.

In FastAPI, for example::

    def guarded(request: Request) -> Allowed:  # a plain def: it runs in the thread pool
        verdict = guard.check(request.query_params, request.headers)
        if isinstance(verdict, Refused):
            raise HTTPException(verdict.status, verdict.body, headers=verdict.headers)
        return verdict
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.api_keys import (
    ApiKeys,
    DatabaseUnavailableError,
    ForbiddenError,
    KeyRecord,
    UnauthorizedError,
)
from serve.rate_limit import Decision, RateLimiter

logger = logging.getLogger(__name__)

QUERY_PARAMETER = "apikey"
UNAVAILABLE_RETRY_S = 5
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="climate"'}
NO_KEY = (
    "no API key: pass it as the apikey query parameter (?apikey=...) or in an "
    "Authorization: Bearer header"
)
TWO_KEYS = (
    "two different API keys: the apikey query parameter and the Authorization header "
    "disagree; send one of them"
)
UNAVAILABLE = "API keys cannot be checked right now; retry in a few seconds"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name (Starlette's Headers or a dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _keys_in(query_params: Mapping[str, str], headers: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    query = (query_params.get(QUERY_PARAMETER) or "").strip()
    if query:
        found.append(query)
    authorization = (_header(headers, "authorization") or "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found.append(token.strip())
    return found


def api_key_from(query_params: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The API key a request carries, or ``None``.

    Parameters
    ----------
    query_params
        The request's query parameters (Starlette's ``request.query_params`` or a dict).
    headers
        The request's headers (``request.headers`` or a dict; names in any case).

    Returns
    -------
    str | None
        The ``apikey`` query parameter if present and not empty, else the token of an
        ``Authorization: Bearer`` header (the scheme in any case), else ``None``.
    """
    found = _keys_in(query_params, headers)
    return found[0] if found else None


@dataclass(frozen=True)
class Allowed:
    """The request may go ahead.

    Attributes
    ----------
    key
        The verified key (``key.key_id`` and ``key.name`` for logs; never the secret).
    decision
        The rate limiter's decision.
    headers
        Rate-limit headers to add to the response.
    """

    key: KeyRecord
    decision: Decision
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refused:
    """The request is refused: the error response to send.

    Attributes
    ----------
    status
        401 (no, malformed or unknown key), 403 (revoked), 429 (rate limit; ``Retry-After``),
        503 (the key could not be checked; ``Retry-After``).
    reason
        What was wrong and what to do, safe to show the client.
    headers
        Headers of the response (``Retry-After`` in whole seconds, ``WWW-Authenticate``).
    """

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body, in Open-Meteo's form: ``{"error": true, "reason": "..."}``."""
        return {"error": True, "reason": self.reason}


def _rate_headers(decision: Decision) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(max(decision.remaining, 0)),
    }


class Guard:
    """API-key verification, then the key's rate limit, for one request.

    Parameters
    ----------
    keys
        The key store (its cache makes most checks database-free).
    limiter
        The rate limiter; a key's ``rate_per_minute``, else the limiter's default, is its
        limit, and its bucket is named by its public ``key_id``.
    """

    def __init__(self, keys: ApiKeys, limiter: RateLimiter) -> None:
        self.keys = keys
        self.limiter = limiter
        self._database_down = False  # warn once per database outage, not once per request

    @property
    def database_down(self) -> bool:
        """Whether the key store's last database read failed (cached keys stand in)."""
        return self.keys.database_down

    def check(
        self, query_params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Allowed | Refused:
        """Check the key a request carries (:func:`api_key_from`) and take a token.

        Returns
        -------
        Allowed | Refused
            Never raises for a bad key, a database outage or a Redis outage.
        """
        found = _keys_in(query_params, headers)
        if len(set(found)) > 1:
            return Refused(401, TWO_KEYS, dict(_CHALLENGE))
        return self.check_key(found[0] if found else None)

    def check_key(self, presented: str | None) -> Allowed | Refused:
        """Check a presented key (``None``: none was given) and take a token from its bucket."""
        if presented is None:
            return Refused(401, NO_KEY, dict(_CHALLENGE))
        try:
            record = self.keys.verify(presented)
        except UnauthorizedError as exc:
            return Refused(401, str(exc), dict(_CHALLENGE))
        except ForbiddenError as exc:
            return Refused(403, str(exc))
        except DatabaseUnavailableError as exc:
            # The message names the database (password masked): for the logs, not the client.
            level = logging.DEBUG if self._database_down else logging.WARNING
            self._database_down = True
            logger.log(level, "%s", exc)
            return Refused(503, UNAVAILABLE, {"Retry-After": str(UNAVAILABLE_RETRY_S)})
        if self._database_down and not self.keys.database_down:  # not a cached row standing in
            self._database_down = False
            logger.warning("API keys can be checked in the database again")
        decision = self.limiter.check(record.key_id, record.rate_per_minute)
        headers = _rate_headers(decision)
        if decision.allowed:
            return Allowed(record, decision, headers)
        retry_after = max(1, math.ceil(decision.retry_after_s))
        return Refused(
            429,
            f"rate limit of {decision.limit} requests per minute exceeded for API key "
            f"{record.key_id}; retry after {retry_after} s",
            {**headers, "Retry-After": str(retry_after)},
        )
