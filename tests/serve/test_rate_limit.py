"""Rate limits in the real Redis (127.0.0.1:6379), its outages, and the API-key guard.

Every test uses its own key prefix and deletes its keys. The outage tests run their own
``redis-server`` on a free port and kill it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from starlette.datastructures import Headers, QueryParams

from pipelines.api_keys import ApiKeys, parse_key
from pipelines.db import make_engine, migrate
from pipelines.errors import ConfigError
from schemas.settings import Settings
from serve.auth import NO_KEY, TWO_KEYS, Allowed, Guard, Refused, api_key_from
from serve.rate_limit import RateLimiter, build_rate_limiter, redis_client

REDIS_URL = "redis://127.0.0.1:6379/0"
LOGGER = "serve.rate_limit"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test in the shared Redis; its keys are deleted afterwards."""
    name = f"test:ratelimit:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is unreachable at {REDIS_URL} ({exc}); these tests need it: start "
            "redis-server (CI does)",
            pytrace=False,
        )
    yield name
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def limiter_factory(prefix: str) -> Iterator[Callable[..., RateLimiter]]:
    """Rate limiters ("replicas") on the shared Redis, each with its own client."""
    clients: list[redis.Redis] = []

    def make(url: str = REDIS_URL, **options: object) -> RateLimiter:
        client = redis_client(url)
        clients.append(client)
        return RateLimiter(client, prefix=prefix, **options)  # type: ignore[arg-type]

    yield make
    for client in clients:
        client.close()


def test_allows_the_limit_then_refuses_with_retry_after(
    limiter_factory: Callable[..., RateLimiter], prefix: str
) -> None:
    limiter = limiter_factory()
    decisions = [limiter.check("k1", 5) for _ in range(5)]
    assert all(d.allowed and d.shared for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.retry_after_s == 0 for d in decisions)

    refused = limiter.check("k1", 5)
    assert not refused.allowed and refused.remaining == 0 and refused.limit == 5
    assert 11.5 < refused.retry_after_s <= 12.0  # one token of 5 a minute: 12 s
    assert limiter.check("k2", 5).allowed  # another key, another bucket

    # The bucket is one hash with an expiry, under this test's prefix.
    client = redis.Redis.from_url(REDIS_URL)
    assert set(client.hgetall(f"{prefix}k1")) == {b"tokens", b"ts"}
    assert 0 < client.pttl(f"{prefix}k1") <= 61_000
    client.close()
    assert limiter.outages == 0 and limiter.fallback_decisions == 0


def test_refills_over_time(limiter_factory: Callable[..., RateLimiter]) -> None:
    limiter = limiter_factory(default_per_minute=120)  # 2 tokens a second
    drained = limiter.check("k", cost=120)
    assert drained.allowed and drained.remaining == 0 and drained.limit == 120
    refused = limiter.check("k")
    assert not refused.allowed and 0.3 < refused.retry_after_s <= 0.5
    time.sleep(refused.retry_after_s + 0.1)
    assert limiter.check("k").allowed
    assert not limiter.check("k").allowed
    time.sleep(1.1)  # two more tokens, never more than the capacity
    assert [limiter.check("k").allowed for _ in range(3)] == [True, True, False]


def test_two_replicas_share_one_bucket(limiter_factory: Callable[..., RateLimiter]) -> None:
    one, two = limiter_factory(), limiter_factory()
    allowed = [(one if i % 2 else two).check("shared", 4).allowed for i in range(4)]
    assert allowed == [True] * 4
    assert not one.check("shared", 4).allowed
    assert not two.check("shared", 4).allowed


def test_bad_limits_are_programming_errors(limiter_factory: Callable[..., RateLimiter]) -> None:
    limiter = limiter_factory()
    with pytest.raises(ValueError, match="at least 1"):
        limiter.check("k", 0)
    with pytest.raises(ValueError, match="at least 1"):
        limiter.check("k", 5, cost=0)


def test_an_unreachable_redis_degrades_to_in_process(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    outages: list[str] = []
    client = redis_client(f"redis://:hunter2@127.0.0.1:{_free_port()}/0")
    limiter = RateLimiter(client, prefix=prefix, cooldown_s=60, on_outage=outages.append)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        decisions = [limiter.check("k", 3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert not any(d.shared for d in decisions)
    assert 19 < decisions[-1].retry_after_s <= 20
    assert limiter.degraded and limiter.outages == 1 and limiter.fallback_decisions == 4
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per outage"
    message = warnings[0].getMessage()
    assert "deciding in-process" in message and "REDIS_URL" in message
    assert "hunter2" not in message
    assert outages == [message]
    client.close()


def test_a_failing_callback_does_not_reach_the_caller(prefix: str) -> None:
    def broken(_: str) -> None:
        raise RuntimeError("metrics backend down")

    client = redis_client(f"redis://127.0.0.1:{_free_port()}/0")
    limiter = RateLimiter(client, prefix=prefix, on_outage=broken)
    assert limiter.check("k", 1).allowed
    client.close()


def test_without_redis_url_decisions_are_in_process(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        limiter = build_rate_limiter(Settings(redis_url=None), default_per_minute=2)
        decisions = [limiter.check("k") for _ in range(3)]
    assert not limiter.uses_redis and not limiter.degraded
    assert [d.allowed for d in decisions] == [True, True, False]
    assert not any(d.shared for d in decisions)
    assert limiter.outages == 0 and limiter.fallback_decisions == 0
    assert not caplog.records


def test_build_from_settings_and_a_bad_url(prefix: str) -> None:
    limiter = build_rate_limiter(Settings(redis_url=REDIS_URL), prefix=prefix)
    assert limiter.uses_redis and limiter.check("k").shared
    with pytest.raises(ConfigError, match="not a Redis URL") as info:
        build_rate_limiter(Settings(redis_url="http://user:hunter2@host:1/"))
    assert "hunter2" not in str(info.value) and "user:***@" in str(info.value)


# -- a real outage: our own redis-server, killed and restarted -------------------------------


class OwnRedis:
    """A throwaway ``redis-server`` on a fixed port (no persistence)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH; install redis (CI has it)", pytrace=False)
        options = {"--port": str(self.port), "--bind": "127.0.0.1", "--save": ""}
        options |= {"--appendonly": "no", "--daemonize": "no", "--dir": str(self.workdir)}
        self.process = subprocess.Popen(
            [binary, *(word for pair in options.items() for word in pair)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(_free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def test_an_outage_mid_way_then_recovery(
    own_redis: OwnRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    outages: list[str] = []
    client = redis_client(f"redis://127.0.0.1:{own_redis.port}/0")
    limiter = RateLimiter(client, prefix=prefix, cooldown_s=0.5, on_outage=outages.append)
    caplog.set_level(logging.WARNING, logger=LOGGER)

    assert limiter.check("k", 100).shared  # Redis decides
    own_redis.stop()
    during = [limiter.check("k", 100) for _ in range(5)]
    assert all(d.allowed and not d.shared for d in during)
    assert limiter.degraded and limiter.outages == 1 and len(outages) == 1
    assert limiter.fallback_decisions == 5

    started = time.monotonic()
    for _ in range(20):  # within the cool-down Redis is not tried: no connect attempts
        assert not limiter.check("k", 100).shared
    assert time.monotonic() - started < 0.2

    own_redis.start()  # same port; the pooled connection is stale, the script cache empty
    time.sleep(0.6)  # past the cool-down
    back = limiter.check("k", 100)
    assert back.allowed and back.shared and not limiter.degraded
    assert back.remaining == 99  # a fresh Redis: a fresh bucket
    assert limiter.check("k", 100).shared
    assert limiter.outages == 1 and len(outages) == 1

    own_redis.stop()  # a second outage is warned about again
    assert not limiter.check("k", 100).shared
    assert limiter.outages == 2 and len(outages) == 2
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("deciding in-process" in m for m in messages) == 2
    assert sum("is back after" in m for m in messages) == 1
    client.close()


def test_probing_after_the_cool_down_while_still_out(own_redis: OwnRedis, prefix: str) -> None:
    client = redis_client(f"redis://127.0.0.1:{own_redis.port}/0")
    limiter = RateLimiter(client, prefix=prefix, cooldown_s=0.2)
    own_redis.stop()
    assert not limiter.check("k", 10).shared
    time.sleep(0.25)
    assert not limiter.check("k", 10).shared  # tried again, still out: the same outage
    assert limiter.outages == 1 and limiter.degraded
    client.close()


# -- the guard: API key, then the key's bucket -----------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[ApiKeys]:
    engine = make_engine(f"sqlite:///{tmp_path / 'climate.db'}")
    migrate(engine)
    yield ApiKeys(engine)
    engine.dispose()


def test_api_key_from_query_or_bearer_header() -> None:
    key = "ck_0123456789ab_" + "x" * 43
    assert api_key_from(QueryParams(f"apikey={key}&latitude=52"), Headers({})) == key
    assert api_key_from({}, Headers({"Authorization": f"Bearer {key}"})) == key
    assert api_key_from({}, {"authorization": f"bearer   {key} "}) == key
    assert api_key_from({}, {"AUTHORIZATION": f"Bearer {key}"}) == key
    assert api_key_from({"apikey": ""}, {"Authorization": "Basic dTpw"}) is None
    assert api_key_from({}, {"Authorization": "Bearer "}) is None
    assert api_key_from({}, {}) is None


def test_the_guard(
    keys: ApiKeys,
    limiter_factory: Callable[..., RateLimiter],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = Guard(keys, limiter_factory(default_per_minute=50))
    record, key = keys.create("acme", rate_per_minute=2)
    secret = parse_key(key)[1]
    _, other = keys.create("other")

    verdict = guard.check(QueryParams({"apikey": key}), Headers({}))
    assert isinstance(verdict, Allowed) and verdict.key == record
    assert verdict.headers == {"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "1"}
    assert isinstance(guard.check({}, {"Authorization": f"Bearer {key}"}), Allowed)
    limited = guard.check({"apikey": key}, {})
    assert isinstance(limited, Refused) and limited.status == 429
    assert limited.headers["Retry-After"] == "30"  # 2 a minute: a token every 30 s
    assert limited.body == {"error": True, "reason": limited.reason}
    assert "2 requests per minute" in limited.reason and record.key_id in limited.reason

    other_verdict = guard.check({"apikey": other}, {})  # the default limit, its own bucket
    assert isinstance(other_verdict, Allowed)
    assert other_verdict.headers["X-RateLimit-Limit"] == "50"

    refusals = {
        "none": guard.check({}, {}),
        "malformed": guard.check({"apikey": "nonsense"}, {}),
        "wrong": guard.check({"apikey": key[:-3] + ("abc" if key[-3:] != "abc" else "abd")}, {}),
        "two": guard.check({"apikey": key}, {"Authorization": f"Bearer {other}"}),
    }
    for verdict in refusals.values():
        assert isinstance(verdict, Refused) and verdict.status == 401
        assert verdict.headers["WWW-Authenticate"].startswith("Bearer")
    assert refusals["none"].reason == NO_KEY and refusals["two"].reason == TWO_KEYS  # type: ignore[union-attr]
    assert "malformed" in refusals["malformed"].reason  # type: ignore[union-attr]

    keys.revoke(record.key_id)
    revoked = guard.check({"apikey": key}, {})
    assert isinstance(revoked, Refused) and revoked.status == 403
    assert "revoked" in revoked.reason

    keys.engine.dispose()
    with keys.engine.begin() as conn:  # the key table is gone: the database "is down"
        conn.exec_driver_sql("DROP TABLE api_keys")
    keys.forget()
    with caplog.at_level(logging.WARNING, logger="serve.auth"):
        down = guard.check({"apikey": other}, {})
        assert guard.check({"apikey": other}, {}) == down
    assert isinstance(down, Refused) and down.status == 503 and "Retry-After" in down.headers
    assert len(caplog.records) == 1, "one warning per database outage"
    assert "cannot check API key" in caplog.records[0].getMessage()
    assert "sqlite" not in down.reason and str(tmp_path) not in down.reason

    for verdict in [limited, revoked, down, *refusals.values()]:
        assert isinstance(verdict, Refused)
        text = f"{verdict.reason} {verdict.headers}"
        assert secret not in text and "Traceback" not in text
