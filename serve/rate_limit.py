"""Per-key token buckets shared by every replica through Redis, in-process when Redis is not.

A bucket holds at most ``limit`` tokens and gains ``limit / 60`` tokens a second; a request takes
one token or is refused with the time until one is there. In Redis each bucket is one hash
(``tokens``, ``ts``) updated by one Lua script, so concurrent replicas never race, and the
script reads Redis's own clock, so replicas' clocks do not matter. An idle bucket expires once
it would be full again.

When Redis cannot be reached or errors, :meth:`RateLimiter.check` decides in-process instead
(the same algorithm, one bucket per replica, so during an outage each replica allows the full
limit), logs one WARNING per outage, counts it (:attr:`RateLimiter.outages`,
:attr:`RateLimiter.fallback_decisions`, the ``on_outage`` callback) and tries Redis again after
``cooldown_s``. It never raises for Redis trouble. Without ``REDIS_URL`` every decision is
in-process.

The calls block (a Redis round trip, bounded by ``socket_timeout_s``): in FastAPI call them
from a plain ``def`` dependency, which runs in the thread pool; the limiter is thread-safe.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import RedisError

from pipelines.errors import ConfigError

if TYPE_CHECKING:
    from redis.commands.core import Script

    from schemas.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "climate:ratelimit:"
DEFAULT_PER_MINUTE = 60
DEFAULT_COOLDOWN_S = 5.0
DEFAULT_SOCKET_TIMEOUT_S = 0.25
DEFAULT_LOCAL_BUCKETS = 100_000

# KEYS[1]: the bucket; ARGV: capacity, refill per second, cost. Returns
# {allowed (0/1), retry after in seconds (text), whole tokens left}. Floats travel as text:
# Redis truncates Lua numbers to integers on the way out.
_TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = tokens + (now - ts) * rate
else
  now = ts
end
if tokens > capacity then
  tokens = capacity
end
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts',
           string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, string.format('%.6f', retry), math.floor(tokens)}
"""


@dataclass(frozen=True)
class Decision:
    """What the limiter decided for one request.

    Attributes
    ----------
    allowed
        Whether the request may go ahead (it took a token).
    retry_after_s
        When refused, seconds until a token is there; 0 when allowed.
    remaining
        Whole tokens left in the bucket after this request.
    limit
        The bucket's capacity (requests per minute).
    shared
        True when Redis decided (shared by all replicas), False when this process did.
    """

    allowed: bool
    retry_after_s: float
    remaining: int
    limit: int
    shared: bool


class LocalBuckets:
    """Token buckets in this process (thread-safe); the most recently used are kept.

    Parameters
    ----------
    max_buckets
        Buckets beyond this many are dropped, least recently used first (a dropped bucket
        starts full again).
    clock
        Seconds, monotonic; ``time.monotonic`` by default.
    """

    def __init__(
        self,
        max_buckets: int = DEFAULT_LOCAL_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, limit: int, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket of capacity ``limit`` if it has them."""
        rate = limit / 60.0
        with self._lock:
            now = self._clock()
            tokens, ts = self._buckets.get(key, (float(limit), now))
            tokens = min(float(limit), tokens + max(0.0, now - ts) * rate)
            if tokens >= cost:
                tokens -= cost
                allowed, retry = True, 0.0
            else:
                allowed, retry = False, (cost - tokens) / rate
            self._buckets[key] = (tokens, max(now, ts))
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        return Decision(allowed, retry, math.floor(tokens), limit, shared=False)

    def clear(self) -> None:
        """Forget every bucket."""
        with self._lock:
            self._buckets.clear()


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(
            f"rate limit {limit!r} per minute: give a whole number of at least 1 "
            "(the key's rate_per_minute or the service default)"
        )
    return limit


class RateLimiter:
    """Per-key token buckets in Redis, falling back to this process while Redis is out.

    Build it with :func:`build_rate_limiter` (from the settings) or directly.

    Parameters
    ----------
    redis
        A Redis client, or ``None`` for in-process buckets only. Give it short socket
        timeouts and no retries (:func:`redis_client` does): a request waits on it.
    default_per_minute
        The limit of a key without its own.
    prefix
        Prefix of the bucket keys in Redis.
    cooldown_s
        After a Redis failure, decide in-process for this long before trying Redis again.
    on_outage
        Called once when an outage begins, with a description (no secrets); hook a metric
        here. Errors it raises are logged, never passed on.
    clock
        Seconds, monotonic, for the cool-down and the local buckets.
    """

    def __init__(
        self,
        redis: Redis | None,
        *,
        default_per_minute: int = DEFAULT_PER_MINUTE,
        prefix: str = DEFAULT_PREFIX,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        on_outage: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s={cooldown_s}: give seconds >= 0")
        self.default_per_minute = _check_limit(default_per_minute)
        self.prefix = prefix
        self.cooldown_s = cooldown_s
        self.on_outage = on_outage
        self.local = LocalBuckets(clock=clock)
        self._clock = clock
        self._redis = redis
        self._script: Script | None = (
            redis.register_script(_TOKEN_BUCKET_LUA) if redis is not None else None
        )
        self._lock = threading.Lock()
        self._retry_at = 0.0  # monotonic time before which Redis is not tried
        self._outage_since: float | None = None
        self.outages = 0
        """Outages begun (each logged once)."""
        self.fallback_decisions = 0
        """Decisions made in-process because Redis failed or was cooling down."""

    @property
    def uses_redis(self) -> bool:
        """Whether a Redis client was given (even if Redis is out right now)."""
        return self._redis is not None

    @property
    def degraded(self) -> bool:
        """Whether Redis is out right now (decisions are in-process)."""
        return self._outage_since is not None

    def check(self, key: str, limit: int | None = None, *, cost: int = 1) -> Decision:
        """Take one request (``cost`` tokens) from ``key``'s bucket; never raises for Redis.

        Parameters
        ----------
        key
            The bucket, e.g. an API key's public ``key_id`` (never a secret: it is a Redis
            key name).
        limit
            Requests per minute (capacity; refill ``limit / 60`` a second); the default when
            ``None``.
        cost
            Tokens this request takes.

        Returns
        -------
        Decision
            Allowed or refused, with the retry delay and the tokens left.

        Raises
        ------
        ValueError
            A limit or cost below 1 (a programming error, not an outage).
        """
        per_minute = _check_limit(self.default_per_minute if limit is None else limit)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"cost {cost!r}: give a whole number of tokens of at least 1")
        if self._script is not None:
            if self._may_try_redis():
                decision = self._redis_take(key, per_minute, cost)
                if decision is not None:
                    return decision
            else:
                with self._lock:
                    self.fallback_decisions += 1
        return self.local.take(key, per_minute, cost)

    def _may_try_redis(self) -> bool:
        """Outside an outage always; during one, one caller per cool-down probes Redis."""
        with self._lock:
            if self._outage_since is None:
                return True
            now = self._clock()
            if now < self._retry_at:
                return False
            self._retry_at = now + self.cooldown_s  # the others stay local meanwhile
            return True

    def _redis_take(self, key: str, limit: int, cost: int) -> Decision | None:
        assert self._script is not None
        try:
            raw: Any = self._script(keys=[self.prefix + key], args=[limit, limit / 60.0, cost])
            allowed, retry, remaining = int(raw[0]), float(raw[1]), int(raw[2])
        except (RedisError, OSError, ValueError, TypeError, IndexError) as exc:
            # Connection refused or lost, timeouts, READONLY, OOM and script errors, and a
            # malformed reply all mean the same here: this replica decides alone until Redis
            # answers again. The request itself must never fail because of the limiter.
            self._failed(exc)
            return None
        self._recovered()
        return Decision(bool(allowed), retry, remaining, limit, shared=True)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            now = self._clock()
            self._retry_at = now + self.cooldown_s
            self.fallback_decisions += 1
            if self._outage_since is not None:
                return
            self._outage_since = now
            self.outages += 1
        description = (
            f"Redis rate limiting unavailable ({type(exc).__name__}: {_first_line(exc)}); "
            f"deciding in-process, per replica, and retrying Redis every {self.cooldown_s:g} s; "
            "check that Redis at REDIS_URL is running and reachable"
        )
        logger.warning("%s", description)
        if self.on_outage is not None:
            try:
                self.on_outage(description)
            except Exception:  # a metrics hook must not break the request path; it is logged
                logger.exception("the on_outage callback of the rate limiter failed")

    def _recovered(self) -> None:
        if self._outage_since is None:  # the common case: no lock taken
            return
        with self._lock:
            since, self._outage_since = self._outage_since, None
        if since is not None:
            logger.warning(
                "Redis rate limiting is back after %.1f s of outage; buckets are shared again",
                self._clock() - since,
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"


def mask_redis_url(url: str) -> str:
    """The Redis URL with its password (if any) replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<unparseable Redis URL>"


def redis_client(
    url: str,
    *,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
) -> Redis:
    """A Redis client for the request path: short timeouts, one immediate retry.

    The one retry reconnects a pooled connection that Redis closed (a restart); a Redis that
    is down costs a request at most about twice the connect timeout, once per cool-down.

    Raises
    ------
    ConfigError
        The URL is not a Redis URL (the message masks its password).
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        return Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
    except ValueError as exc:
        raise ConfigError(
            f"REDIS_URL {mask_redis_url(url)} is not a Redis URL ({_first_line(exc)}); use "
            "redis://[:password@]host:6379/0 or rediss://... for TLS, or unset it for "
            "in-process rate limiting"
        ) from None


def build_rate_limiter(
    settings: Settings | None = None,
    *,
    default_per_minute: int = DEFAULT_PER_MINUTE,
    cooldown_s: float = DEFAULT_COOLDOWN_S,
    prefix: str = DEFAULT_PREFIX,
    on_outage: Callable[[str], None] | None = None,
) -> RateLimiter:
    """The rate limiter of the settings' ``REDIS_URL``; in-process only when it is unset.

    Parameters
    ----------
    settings
        Read from the environment now when ``None``.
    default_per_minute, cooldown_s, prefix, on_outage
        See :class:`RateLimiter`.

    Raises
    ------
    ConfigError
        ``REDIS_URL`` is set but is not a Redis URL.
    """
    if settings is None:
        from schemas.settings import load_settings

        settings = load_settings()
    url = (settings.redis_url or "").strip()
    if not url:
        logger.info("REDIS_URL is unset: rate limits are kept per replica, in-process")
    return RateLimiter(
        redis_client(url) if url else None,
        default_per_minute=default_per_minute,
        prefix=prefix,
        cooldown_s=cooldown_s,
        on_outage=on_outage,
    )
