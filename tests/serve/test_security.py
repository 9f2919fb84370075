"""API keys, rate limits, outages, overload and fuzzing of the online API over real HTTP.

One application (``secured``) serves a regional forecast run with ``auth.required``: two ingress
replicas, keys in a PostgreSQL database of its own, rate limits in a ``redis-server`` of this
module. The tests run in file order: Redis is killed near the end, then the database stops
taking connections. A second, one-replica application (``busy``, auth off) is deployed for the
overload test only.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
from openmeteo_requests import Client
from psycopg import sql
from ray import serve
from sqlalchemy import Engine

from jobs.serve import load_serve_file, wait_ready
from pipelines.api_keys import ApiKeys
from pipelines.db import make_engine, migrate
from pipelines.forecast.runner import run_forecast
from schemas.serve_config import AuthOptions, ServeArgs
from schemas.settings import Settings
from serve.auth import Refused
from serve.security import build_guard, guard_warnings
from tests.fixtures.db import PG_ADMIN_DB, PG_HOST, PG_PORT, PG_USER
from tests.pipelines.forecast.helpers import forecast_config, make_model, make_store
from tests.serve.conftest import INIT, Answer, _free_port, deploy_app, http
from tests.serve.test_rate_limit import OwnRedis

pytestmark = [pytest.mark.slow, pytest.mark.db]

ROOT = Path(__file__).resolve().parents[2]
LATS = np.linspace(60.0, 44.0, 9)  # a regional grid: points outside it exist
LONS = np.linspace(-10.0, 12.0, 12)
BODY_LIMIT = 16 * 1024
KEY_CACHE_S = 1.0
RATE = 100_000  # per minute: keys that must never be limited
POINT = {"latitude": 51.5, "longitude": -0.1, "hourly": "temperature_2m", "forecast_hours": 12}
PREDICT = {"init_time": INIT, "lead_hours": "1"}
NPY = "application/x-npy"


@dataclass
class Secured:
    """The running application, what it serves from, and every answer it gave."""

    url: str
    port: int
    root: Path
    engine: Engine
    database: str
    redis: OwnRedis
    model: Path
    forecast_store: Path
    keys: ApiKeys = field(init=False)
    seen: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = ApiKeys(self.engine, cache_ttl_s=0)

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        key: str | None = None,
        bearer: str | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> Answer:
        query = dict(params or {})
        if key is not None:
            query["apikey"] = key
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
        answer = http(self.url, method, path, query or None, data, content_type, headers)
        self.seen.append(answer)
        return answer

    def get(self, path: str, key: str | None = None, **params: Any) -> Answer:
        return self.call("GET", path, params, key=key)

    def new_key(self, rate: int | None = RATE) -> tuple[str, str]:
        """A new key: (key id, full key)."""
        record, key = self.keys.create("test", rate)
        return record.key_id, key


def _admin() -> psycopg.Connection:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True
    )


def _allow_connections(database: str, allowed: bool) -> None:
    """Open or close ``database`` to every connection (superusers too), ending the open ones."""
    with _admin() as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(database), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )


@pytest.fixture(scope="module")
def secured(
    ray_session: None, postgres_database_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    """The application with keys required, two ingress replicas, a committed run."""
    root = tmp_path_factory.mktemp("secured")
    database_url = postgres_database_factory()
    engine = make_engine(database_url)
    migrate(engine)
    dataset = make_store(root / "analysis.zarr", variables=("t2m",), n_lat=LATS, n_lon=LONS)
    model, _ = make_model(root / "model", dataset, variables=("t2m",))
    store = root / "forecast.zarr"
    config = forecast_config(
        root / "analysis.zarr",
        model,
        store,
        run_id="secured",
        init_times={"kind": "list", "times": [INIT]},
        lead_times={"max_hours": 12, "step_hours": 1},
        batch_size=1,
        concurrency=1,
    )
    run_forecast(config, Settings(database_url=database_url), engine)
    own_redis = OwnRedis(_free_port(), root)
    own_redis.start()
    args = {
        "forecast_store": str(store),
        "model": {"kind": "file", "path": str(model)},
        "device": "cpu",
        "refresh_seconds": 0.5,
        "limits": {"max_body_bytes": BODY_LIMIT, "max_locations": 3, "max_forecast_hours": 12},
        "auth": {
            "required": True,
            "default_rate_per_minute": 600,
            "key_cache_seconds": KEY_CACHE_S,
            "key_stale_seconds": 600,
            "redis_retry_seconds": 0.5,
        },
        "ingress": {"num_cpus": 0.1, "autoscaling": {"min_replicas": 2, "max_replicas": 2}},
        "predictor": {
            "num_cpus": 0.1,
            "max_ongoing_requests": 4,
            "batching": {"max_batch_size": 2},
        },
    }
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    env = {"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    try:
        deploy_app(args, env, "secured")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=120)
        yield Secured(url, port, root, engine, str(engine.url.database), own_redis, model, store)
    finally:
        serve.shutdown()
        own_redis.stop()
        _allow_connections(str(engine.url.database), True)
        engine.dispose()


def _error(answer: Answer, status: int) -> str:
    assert answer.status == status, (answer.status, answer.body[:500])
    body = answer.json()
    assert body["error"] is True
    return str(body["reason"])


def _statuses(answers: list[Answer]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return counts


# -- configuration and wiring (no Serve) ----------------------------------------------------------


def test_keys_are_required_unless_turned_off_in_writing() -> None:
    args = load_serve_file(str(ROOT / "configs/serve.yaml")).applications[0].args
    assert args.auth.required is True
    assert ServeArgs.model_validate({"forecast_store": "x", "model": "m"}).auth.required
    assert args.ingress.max_queued_requests > 0
    options = args.ingress.ray_options()
    assert options["backpressure_config"] == {"status_code": 503, "retry_after_s": 1.0}


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.count += 1


def test_a_redis_outage_is_logged_and_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    migrate(engine)
    _, key = ApiKeys(engine).create("wiring", 2)
    settings = Settings(
        database_url=str(engine.url), redis_url=f"redis://127.0.0.1:{_free_port()}/0"
    )
    metrics: Any = SimpleNamespace(rate_limit_degraded=_Counter())
    assert build_guard(AuthOptions(required=False), settings, metrics) is None
    guard = build_guard(AuthOptions(redis_retry_seconds=0), settings, metrics)
    assert guard is not None
    caplog.set_level(logging.WARNING, logger="serve.rate_limit")
    verdicts = [guard.check({"apikey": key}, {}) for _ in range(3)]
    assert [type(v).__name__ for v in verdicts] == ["Allowed", "Allowed", "Refused"]
    assert isinstance(verdicts[2], Refused) and verdicts[2].status == 429
    assert metrics.rate_limit_degraded.count == 1
    assert sum("deciding in-process" in r.getMessage() for r in caplog.records) == 1
    assert guard_warnings(guard) == ["Redis unreachable: rate limits are kept per replica"]
    engine.dispose()


# -- keys ----------------------------------------------------------------------------------------


def test_the_openapi_document_names_both_key_schemes(secured: Secured) -> None:
    document = secured.get("/openapi.json")
    assert document.status == 200
    spec = document.json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["apikey"] == {
        "type": "apiKey",
        "in": "query",
        "name": "apikey",
        "description": schemes["apikey"]["description"],
    }
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            security = operation.get("security")
            if path.startswith("/v1/"):
                assert security == [{"apikey": []}, {"bearer": []}], path
                assert {"401", "403", "429"} <= set(operation["responses"]), path
            else:
                assert security is None, path
    for path in ("/health", "/docs"):
        assert secured.get(path).status == 200, path
    deadline = time.monotonic() + 60  # open, but ready only once a run and a model are held
    while secured.get("/ready").status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert secured.get("/ready").status == 200


def test_no_key_or_a_bad_key_is_401(secured: Secured) -> None:
    key_id, key = secured.new_key()
    assert "apikey" in _error(secured.get("/v1/forecast", **POINT), 401)
    assert "apikey" in _error(secured.get("/v1/models"), 401)
    malformed = secured.get("/v1/forecast", key="not-a-key", **POINT)
    assert "malformed" in _error(malformed, 401)
    assert malformed.headers["www-authenticate"].startswith("Bearer")
    unknown = f"ck_{'0' * 12}_{key[-43:]}"
    wrong_secret = key[:-1] + ("a" if key[-1] != "a" else "b")
    for bad in (unknown, wrong_secret):
        reason = _error(secured.get("/v1/forecast", key=bad, **POINT), 401)
        assert "not valid" in reason and bad not in reason
    other = secured.new_key()[1]
    two = secured.call("GET", "/v1/forecast", POINT, key=key, bearer=other)
    assert "two different" in _error(two, 401)
    assert key_id


def test_a_key_in_the_query_or_a_bearer_header_is_served(secured: Secured) -> None:
    _, key = secured.new_key(rate=50)
    by_query = secured.get("/v1/forecast", key=key, **POINT)
    by_header = secured.call("GET", "/v1/forecast", POINT, bearer=key)
    assert by_query.status == by_header.status == 200, by_header.body[:300]
    assert by_query.json()["hourly"] == by_header.json()["hourly"]
    assert by_query.headers["x-forecast-run"] == "secured"
    assert by_header.headers["x-ratelimit-limit"] == "50"
    assert int(by_header.headers["x-ratelimit-remaining"]) < 50
    lower = secured.call("GET", "/v1/models", None, bearer=key)
    assert lower.status == 200 and lower.json()["default"]


def test_bad_parameters_are_400_naming_them(secured: Secured) -> None:
    _, key = secured.new_key()
    cases = {
        "latitude": {**POINT, "latitude": 95},
        "hourly": {**POINT, "hourly": "snow_depth_on_mars"},
        "forecast_hours": {**POINT, "forecast_hours": 13},
    }
    for parameter, params in cases.items():
        assert f"parameter {parameter}" in _error(secured.get("/v1/forecast", key, **params), 400)
    four = {**POINT, "latitude": "50,51,52,53", "longitude": "0,1,2,3"}
    reason = _error(secured.get("/v1/forecast", key, **four), 400)
    assert "parameter latitude" in reason and "at most 3" in reason
    south = _error(secured.get("/v1/forecast", key, **{**POINT, "latitude": 10}), 400)
    assert "parameter latitude" in south and "outside the domain" in south
    east = _error(secured.get("/v1/forecast", key, **{**POINT, "longitude": 100}), 400)
    assert "parameter longitude" in east and "outside the domain" in east


def test_an_oversized_body_is_413_after_the_key(secured: Secured) -> None:
    _, key = secured.new_key()
    big = b"0" * (BODY_LIMIT + 1)
    assert secured.call("POST", "/v1/predict", PREDICT, data=big, content_type=NPY).status == 401
    answer = secured.call("POST", "/v1/predict", PREDICT, key=key, data=big, content_type=NPY)
    assert str(BODY_LIMIT) in _error(answer, 413)


def test_the_open_meteo_client_reads_the_json_values(secured: Secured) -> None:
    _, key = secured.new_key()
    params = {**POINT, "timeformat": "unixtime"}
    body = secured.get("/v1/forecast", key, **params).json()
    (response,) = Client().weather_api(
        f"{secured.url}/v1/forecast", params={**params, "apikey": key}
    )
    hourly = response.Hourly()
    assert hourly is not None
    values = hourly.Variables(0).ValuesAsNumpy()
    np.testing.assert_array_equal(values, np.asarray(body["hourly"]["temperature_2m"], np.float32))
    assert hourly.Time() == body["hourly"]["time"][0]
    assert response.Latitude() == pytest.approx(body["latitude"])


def test_schemathesis_finds_no_server_error(secured: Secured) -> None:
    _, key = secured.new_key()
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{secured.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "30",
        "--seed",
        "1",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--header",
        f"Authorization: Bearer {key}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "/v1/forecast" in output and "/v1/predict" in output


# -- rate limits and Redis -----------------------------------------------------------------------


def test_a_tiny_limit_is_shared_by_both_replicas_through_redis(secured: Secured) -> None:
    replicas = {secured.get("/ready").json()["replica"] for _ in range(20)}
    assert len(replicas) == 2  # requests reach both replicas
    key_id, key = secured.new_key(rate=5)
    answers = [secured.get("/v1/forecast", key, **POINT) for _ in range(15)]
    assert _statuses(answers) == {200: 5, 429: 10}  # per replica it would be up to 10
    for answer in answers:
        if answer.status == 429:
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.headers["x-ratelimit-remaining"] == "0"
            assert key_id in _error(answer, 429)
    client = redis.Redis(port=secured.redis.port)
    assert client.exists(f"climate:ratelimit:{key_id}")
    client.close()


def test_a_revoked_key_is_403_within_the_cache_time(secured: Secured) -> None:
    key_id, key = secured.new_key()
    assert all(secured.get("/v1/models", key).status == 200 for _ in range(6))
    secured.keys.revoke(key_id)
    revoked = time.monotonic()
    while secured.get("/v1/models", key).status == 200:
        assert time.monotonic() - revoked < KEY_CACHE_S + 2, "still served after the cache time"
        time.sleep(0.05)
    time.sleep(KEY_CACHE_S)  # now past every replica's cache time
    for _ in range(6):
        reason = _error(secured.get("/v1/models", key), 403)
        assert "revoked" in reason and key_id in reason


def test_redis_stopped_mid_test_keeps_limiting_in_process(secured: Secured) -> None:
    _, key = secured.new_key(rate=5)
    assert secured.get("/v1/forecast", key, **POINT).status == 200
    secured.redis.stop()
    started = time.monotonic()
    answers = [secured.get("/v1/forecast", key, **POINT) for _ in range(30)]
    assert time.monotonic() - started < 20
    counts = _statuses(answers)
    assert set(counts) == {200, 429}, counts
    assert 5 <= counts[200] <= 10  # a full bucket per replica: at most twice the limit
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers if a.status == 429)
    ready = [secured.get("/ready") for _ in range(10)]
    assert all(answer.status == 200 for answer in ready)
    warnings = {w for answer in ready for w in answer.json()["warnings"]}
    assert any("Redis unreachable" in w for w in warnings), warnings


# -- overload ------------------------------------------------------------------------------------


@pytest.fixture
def busy(secured: Secured) -> Iterator[str]:
    """A second application, auth off explicitly, one ingress replica taking one request at a
    time and queueing one more."""
    args = {
        "forecast_store": str(secured.forecast_store),
        "model": {"kind": "file", "path": str(secured.model)},
        "device": "cpu",
        "auth": {"required": False},
        "ingress": {
            "num_cpus": 0.1,
            "max_ongoing_requests": 1,
            "max_queued_requests": 1,
            "retry_after_s": 2,
        },
        "predictor": {
            "num_cpus": 0.1,
            "max_ongoing_requests": 1,
            "batching": {"max_batch_size": 1},
        },
    }
    deploy_app(args, {}, "busy", route_prefix="/busy")
    url = f"{secured.url}/busy"
    try:
        wait_ready(url, timeout=120)
        yield url
    finally:
        serve.delete("busy")


def _slow_upload(port: int, path: str) -> socket.socket:
    """A request whose body never ends: it holds its replica until the socket closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {NPY}\r\n"
        "Content-Length: 4096\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\x93NUMPY")
    return sock


def test_requests_beyond_the_queue_are_503_with_retry_after(secured: Secured, busy: str) -> None:
    path = "/busy/v1/predict?init_time=2020-01-02T06:00Z&lead_hours=1"
    held = _slow_upload(secured.port, path)
    queued: list[Answer] = []
    try:
        time.sleep(1.0)  # the slow request is on the replica
        waiting = threading.Thread(
            target=lambda: queued.append(http(busy, "GET", "/v1/forecast", POINT))
        )
        waiting.start()
        time.sleep(1.0)  # the second one waits in the queue
        refused = http(busy, "GET", "/v1/forecast", POINT)
        secured.seen.append(refused)
        assert refused.status == 503, (refused.status, refused.body[:300])
        assert refused.headers["retry-after"] == "2"
        assert b"backpressure" in refused.body  # Serve's own text: the proxy answers it
        assert not queued
    finally:
        held.close()
    waiting.join(timeout=60)
    assert [answer.status for answer in queued] == [200]


# -- the database --------------------------------------------------------------------------------


def test_the_database_unreachable_keeps_verified_keys_served(secured: Secured) -> None:
    _, verified = secured.new_key()
    _, fresh = secured.new_key()
    before = [secured.get("/v1/forecast", verified, **POINT) for _ in range(20)]
    assert _statuses(before) == {200: 20}
    _allow_connections(secured.database, False)
    try:
        time.sleep(KEY_CACHE_S + 0.5)  # every cached row is now older than the cache time
        during = [secured.get("/v1/forecast", verified, **POINT) for _ in range(20)]
        assert _statuses(during) == {200: 20}
        assert [a.json()["hourly"] for a in during] == [before[0].json()["hourly"]] * 20
        unchecked = secured.get("/v1/forecast", fresh, **POINT)
        assert "cannot be checked" in _error(unchecked, 503)
        assert int(unchecked.headers["retry-after"]) >= 1
        ready = [secured.get("/ready") for _ in range(6)]
        assert all(answer.status == 200 for answer in ready)
        warnings = {w for answer in ready for w in answer.json()["warnings"]}
        assert any("database unreachable" in w for w in warnings), warnings
    finally:
        _allow_connections(secured.database, True)
    deadline = time.monotonic() + 20
    while secured.get("/v1/forecast", fresh, **POINT).status != 200:
        assert time.monotonic() < deadline, "the new key is not served after the database came back"
        time.sleep(0.2)


def test_no_answer_was_a_server_error_or_carried_a_traceback(secured: Secured) -> None:
    assert len(secured.seen) > 100
    assert not [a for a in secured.seen if a.status == 500]
    assert not [a for a in secured.seen if b"Traceback" in a.body]
