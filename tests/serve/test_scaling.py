"""Autoscaling and replica faults of the application on real Serve, over loopback HTTP.

One application (``climate-scaling``) on the suite's Ray: a CNN t2m model on a 91 x 180 global
grid (about 40 ms per 24-hour rollout here, so predictions are slow enough to queue), a
synthetic forecast run of it, two fixed ingress replicas and a predictor that autoscales
between 1 and 2 replicas on ``target_ongoing_requests`` 1 with delays of 1-2 s.

Why the suite's Ray will do: in Ray 2.60 the autoscaling metrics of a deployment are recorded
every ``min(look_back_period_s * 0.2, metrics_interval_s)`` and pushed to the controller every
``metrics_interval_s`` of that deployment's ``autoscaling_config`` (the environment variables
``RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S`` and
``RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S`` are defined in
``ray/serve/_private/constants.py`` but read nowhere yet), so a short ``metrics_interval_s``
in the application's arguments is enough; no Ray of our own with a special environment.

The tests run in file order and share the application.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import pytest
from ray import serve

from serve.app import build_app
from tests.helpers.forecast_runs import global_axes, write_run
from tests.helpers.models import make_cnn_model

pytestmark = pytest.mark.slow

APP = "climate-scaling"
NPY = "application/x-npy"
LEADS = ",".join(str(h) for h in range(1, 25))
PREDICT = f"/v1/predict?init_time=2020-01-02T06:00Z&lead_hours={LEADS}"
POINT = "/v1/forecast?latitude=52.52&longitude=13.41&hourly=t2m&forecast_hours=24"
MIN_REPLICAS, MAX_REPLICAS = 1, 2
AUTOSCALING = {
    "min_replicas": MIN_REPLICAS,
    "max_replicas": MAX_REPLICAS,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 2,
    "look_back_period_s": 1,
    "metrics_interval_s": 0.25,
}
INGRESS_REPLICAS = 2
MIN_REQUESTS = 500  # of the fault test's load, so that one failure is 0.2%


@dataclass
class Scaling:
    """The running application."""

    url: str
    body: bytes  # a .npy of initial fields for /v1/predict


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _send(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    """The HTTP status of one request (0 when the connection itself failed) and, for a
    failure, the start of the answer."""
    request = urllib.request.Request(f"{url}{path}", data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", NPY)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            reply.read()
            return int(reply.status), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()[:200].decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def _status(url: str, method: str, path: str) -> int:
    return _send(url, method, path)[0]


@dataclass
class Load:
    """``concurrency`` threads sending one request after another until stopped."""

    send: Callable[[], tuple[int, str]]
    concurrency: int
    statuses: Counter[int] = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)  # of the first failures
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _loop(self) -> None:
        while not self._stop.is_set():
            status, reason = self.send()
            with self._lock:
                self.statuses[status] += 1
                if not 200 <= status < 300 and len(self.reasons) < 10:
                    self.reasons.append(f"{status} {reason}")

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._loop, daemon=True) for _ in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


def _replica_states(deployment: str) -> dict[str, int]:
    """Replicas of one deployment of the application, by state (RUNNING, STARTING...)."""
    status = serve.status().applications[APP].deployments[deployment]
    return {str(getattr(k, "value", k)): int(v) for k, v in status.replica_states.items()}


def _replica_pids(deployment: str) -> list[int]:
    """Live processes of one deployment's replicas (their title names app and deployment)."""
    title = f"ray::ServeReplica:{APP}:{deployment}"
    pids = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and cmdline[0] == title and proc.info["status"] != psutil.STATUS_ZOMBIE:
            pids.append(proc.pid)
    return sorted(pids)


def _settled_ingress() -> list[int]:
    """The ingress replicas' pids once all of them run (and no more); [] before."""
    if _replica_states("Ingress") != {"RUNNING": INGRESS_REPLICAS}:
        return []
    pids = _replica_pids("Ingress")
    return pids if len(pids) == INGRESS_REPLICAS else []


def _until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def scaling(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scaling]:
    """The application on a free port, ready (run and model loaded)."""
    root = tmp_path_factory.mktemp("scaling")
    lat, lon = global_axes(91, 180)
    card = make_cnn_model(root / "cnn.onnx", lat, lon)
    write_run(str(root / "forecast.zarr"), card, leads=24)
    fields = np.random.default_rng(0).normal(288.0, 5.0, (2, 1, 91, 180)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, fields)
    args = {
        "forecast_store": str(root / "forecast.zarr"),
        "model": {"kind": "file", "path": str(root / "cnn.onnx")},
        "device": "cpu",
        "refresh_seconds": 1,
        "auth": {"required": False},  # keys are tested in test_security.py
        "ingress": {
            "num_cpus": 0.1,
            "max_ongoing_requests": 32,
            "autoscaling": {"min_replicas": INGRESS_REPLICAS, "max_replicas": INGRESS_REPLICAS},
        },
        "predictor": {
            "num_cpus": 0.1,
            "max_ongoing_requests": 2,
            "autoscaling": AUTOSCALING,
            "batching": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0},
        },
    }
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    with pytest.MonkeyPatch.context() as patch:  # what build_app reads from the environment
        patch.setenv("DATABASE_URL", f"sqlite:///{root / 'climate.db'}")
        patch.setenv("MODEL_REGISTRY_URL", str(root / "registry"))
        patch.delenv("REDIS_URL", raising=False)
        application = build_app(args)
    try:
        serve.run(application, name=APP, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        _until(lambda: _status(url, "GET", "/ready") == 200, 120, "the application is ready")
        yield Scaling(url=url, body=buffer.getvalue())
    finally:
        serve.shutdown()


def test_the_predictor_scales_up_under_load_and_back_down_within_its_bounds(
    scaling: Scaling,
) -> None:
    _until(lambda: _replica_states("Predictor") == {"RUNNING": MIN_REPLICAS}, 60, "1 replica")
    seen: list[dict[str, int]] = []

    def running(at_least: int | None = None, exactly: int | None = None) -> bool:
        states = _replica_states("Predictor")
        seen.append(states)
        count = states.get("RUNNING", 0)
        if at_least is not None:
            return count >= at_least
        return count == exactly and sum(states.values()) == exactly

    def predict() -> tuple[int, str]:
        return _send(scaling.url, "POST", PREDICT, scaling.body)

    started = time.monotonic()
    with Load(predict, concurrency=4) as load:
        _until(lambda: running(at_least=MAX_REPLICAS), 45, "a second predictor replica")
        scaled_up = time.monotonic() - started
        for _ in range(8):  # still loaded for 2 s: stays at the maximum, never above
            time.sleep(0.25)
            running(at_least=MAX_REPLICAS)
    stopped = time.monotonic()
    _until(lambda: running(exactly=MIN_REPLICAS), 45, "back to one predictor replica")
    scaled_down = time.monotonic() - stopped

    assert load.failed == 0, (load.statuses, load.reasons)
    assert load.total > 0
    active = [s.get("RUNNING", 0) + s.get("STARTING", 0) for s in seen]
    assert max(active) == MAX_REPLICAS, seen  # bounded above
    assert min(s.get("RUNNING", 0) for s in seen) >= MIN_REPLICAS, seen  # never below
    print(
        f"scaled up {scaled_up:.1f} s after the load began, down {scaled_down:.1f} s after it "
        f"ended; {load.total} predictions answered"
    )


def test_a_killed_ingress_replica_is_replaced_and_the_load_barely_notices(
    scaling: Scaling,
) -> None:
    before = _until(_settled_ingress, 30, f"{INGRESS_REPLICAS} ingress replicas")
    victim = before[0]

    def point() -> tuple[int, str]:
        return _send(scaling.url, "GET", POINT)

    with Load(point, concurrency=8) as load:
        time.sleep(2)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        replaced = _until(
            lambda: victim not in (pids := _settled_ingress()) and pids,
            60,
            "a replacement ingress replica",
        )
        recovered = time.monotonic() - killed
        # the load goes on across the new replica: 2 s, and at least MIN_REQUESTS in all
        time.sleep(2)
        _until(lambda: load.total >= MIN_REQUESTS, 30, f"{MIN_REQUESTS} requests sent")

    assert set(before) != set(replaced)
    assert load.failed / load.total < 0.01, (load.statuses, load.reasons)
    print(
        f"replaced in {recovered:.1f} s; {load.failed} of {load.total} requests failed "
        f"({dict(load.statuses)})"
    )
