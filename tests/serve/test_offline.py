"""``climate serve --offline DIR``: the application built from a synced directory answers point
forecasts and predictions as the online one does, with the database, Redis and S3 pointed at a
port where every connection is counted and dropped (none may arrive).

The online application (``deployed``, on the suite's Serve) is the reference: it serves the
registry's promoted model and the committed run; ``climate sync`` copies both, with the API-key
hashes, and the offline application runs beside it under ``/offline`` with the arguments
:func:`jobs.serve.offline_spec` makes of ``configs/serve.yaml`` (as the command does). The tests
share both applications and run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from jobs.serve import load_serve_file, offline_spec, wait_ready
from pipelines.api_keys import ApiKeys
from pipelines.errors import ClimateError
from pipelines.forecast import open_forecast_store
from pipelines.models.runtime import ModelRuntime
from pipelines.sync import sync_to, verify_sync
from schemas.model_source import RegistryModel
from schemas.serve_config import ServeFile
from tests.fixtures.s3 import free_port
from tests.serve.conftest import (
    INIT,
    MODEL,
    REFRESH,
    Answer,
    Deployed,
    deploy_app,
    fields_for,
    http,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/offline"
LEADS = [1, 3, 6, 12]
POINT = {
    "latitude": 45.0,
    "longitude": 0.0,
    "hourly": "t2m",
    "cell_selection": "nearest",
    "temperature_unit": "kelvin",
    "forecast_hours": 12,
}


class Tripwire:
    """A loopback port that accepts every connection, counts it and closes it at once."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def check(self) -> None:
        """One connection of ours is counted (then the count starts again at zero)."""
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        for _ in range(100):
            if self.connections:
                break
            threading.Event().wait(0.05)
        assert self.connections == 1
        self.connections = 0

    def env(self) -> dict[str, str]:
        """Every server the online application uses, pointed here."""
        return {
            "DATABASE_URL": f"postgresql+psycopg://climate@127.0.0.1:{self.port}/climate",
            "MODEL_REGISTRY_URL": "s3://unreachable/registry",
            "REDIS_URL": f"redis://127.0.0.1:{self.port}/0",
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
        }

    def close(self) -> None:
        self.sock.close()


@dataclass
class Offline:
    """Both applications, the synced directory and the keys."""

    deployed: Deployed
    url: str
    edge: Path
    run_id: str
    model_id: str
    key: str
    limited: str
    revoked: str
    tripwire: Tripwire

    def get(self, path: str, key: str | None = None, **params: Any) -> Answer:
        query = {**params, "apikey": key} if key else params
        return http(self.url, "GET", path, query or None)

    def predict(self, key: str | None) -> Answer:
        body = {"init_time": INIT, "lead_hours": LEADS, "fields": _fields(self.deployed).tolist()}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = json.dumps(body).encode()
        return http(self.url, "POST", "/v1/predict", None, data, "application/json", headers)

    def sync(self) -> None:
        sync_to(
            self.edge,
            str(self.deployed.forecast_store),
            RegistryModel(name=MODEL),
            self.deployed.settings,
        )


def _fields(deployed: Deployed) -> np.ndarray:
    return fields_for(deployed.dataset)


def _spec() -> ServeFile:
    """``configs/serve.yaml`` scaled down to this machine (auth stays required)."""
    data = load_serve_file(str(ROOT / "configs/serve.yaml")).model_dump()
    args = data["applications"][0]["args"]
    args.update(device="cpu", refresh_seconds=REFRESH)
    fixed = {"min_replicas": 1, "max_replicas": 1}
    args["ingress"].update(num_cpus=0.1, autoscaling=fixed)
    args["predictor"].update(num_cpus=0.1, autoscaling=fixed, max_ongoing_requests=8)
    args["predictor"]["batching"] = {"max_batch_size": 4, "batch_wait_timeout_s": 0.02}
    return ServeFile.model_validate(data)


@pytest.fixture(scope="module")
def offline(deployed: Deployed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    model_id = next(iter(deployed.models))
    run_id = deployed.commit_run(model_id)
    keys = ApiKeys(deployed.engine, cache_ttl_s=0)
    _, key = keys.create("edge-user")
    _, limited = keys.create("edge-limited", rate_per_minute=2)
    gone, revoked = keys.create("edge-revoked")
    keys.revoke(gone.key_id)
    tripwire = Tripwire()
    tripwire.check()
    found = Offline(
        deployed=deployed,
        url=f"{deployed.url}{PREFIX}",
        edge=tmp_path_factory.mktemp("offline") / "edge",
        run_id=run_id,
        model_id=model_id,
        key=key,
        limited=limited,
        revoked=revoked,
        tripwire=tripwire,
    )
    found.sync()
    args = offline_spec(_spec(), found.edge).applications[0].args
    try:
        deploy_app(args.model_dump(), tripwire.env(), "climate-offline", PREFIX)
        wait_ready(found.url, timeout=180)
        yield found
    finally:
        tripwire.close()


def _run_values(store: Path, run_id: str) -> np.ndarray:
    dataset = open_forecast_store(str(store), run_id=run_id)
    cell = dataset.t2m.isel(init_time=-1).sel(lat=45.0, lon=0.0, method="nearest")
    return np.asarray(cell.values, dtype=np.float32)


def _until_served(offline: Offline, run_id: str, model_id: str) -> None:
    for _ in range(240):
        answer = offline.get("/ready")
        if answer.status == 200 and (answer.json()["run_id"], answer.json()["model"]) == (
            run_id,
            model_id,
        ):
            return
        threading.Event().wait(REFRESH / 2)
    raise AssertionError(f"the offline application never served {run_id} of {model_id}")


def test_ready_from_the_synced_run_and_model(offline: Offline) -> None:
    body = offline.get("/ready").json()
    assert body["ready"] is True
    assert (body["run_id"], body["model"]) == (offline.run_id, offline.model_id)
    assert body["warnings"] == []
    listed = offline.get("/v1/models", offline.key).json()
    assert listed["default"] == offline.model_id
    assert [(row["id"], row["status"]) for row in listed["models"]] == [(offline.model_id, "file")]


def test_point_forecast_equals_the_synced_run_and_the_online_answer(offline: Offline) -> None:
    answer = offline.get("/v1/forecast", offline.key, **POINT)
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["x-forecast-run"] == offline.run_id
    values = np.asarray(answer.json()["hourly"]["t2m"], dtype=np.float32)
    synced = _run_values(offline.edge / "forecast", offline.run_id)
    np.testing.assert_array_equal(values, synced)
    online = offline.deployed.get("/v1/forecast", **POINT)
    assert online.status == 200 and online.headers["x-forecast-run"] == offline.run_id
    assert online.json()["hourly"] == answer.json()["hourly"]


def test_predict_equals_the_runtime_rollout_and_the_online_answer(offline: Offline) -> None:
    answer = offline.predict(offline.key)
    assert answer.status == 200, answer.body[:500]
    body = answer.json()
    assert body["model"] == offline.model_id
    path, card = offline.deployed.models[offline.model_id]
    runtime = ModelRuntime.load(path, card, "cpu", threads=1)
    hour = np.array([int(INIT[11:13])])
    expected = runtime.rollout(_fields(offline.deployed)[None], hour, max(LEADS), tuple(LEADS))[0]
    np.testing.assert_array_equal(np.asarray(body["fields"], dtype=np.float32), expected)
    online = offline.deployed.post_json(
        {"init_time": INIT, "lead_hours": LEADS, "fields": _fields(offline.deployed).tolist()}
    )
    assert online.status == 200 and online.json()["fields"] == body["fields"]


def test_keys_are_checked_against_the_synced_hashes_and_limited_in_process(
    offline: Offline,
) -> None:
    assert offline.get("/v1/forecast", **POINT).status == 401
    assert offline.get("/v1/forecast", offline.revoked, **POINT).status == 401
    assert offline.predict(None).status == 401
    statuses = [offline.get("/v1/forecast", offline.limited, **POINT).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert offline.get("/health").json() == {"alive": True}  # open, as online


def test_a_newer_sync_is_followed(offline: Offline) -> None:
    new_model = offline.deployed.add_model(0.5)  # promoted: what the next sync copies
    new_run = offline.deployed.commit_run(new_model)
    offline.sync()
    assert verify_sync(offline.edge).run.run_id == new_run
    _until_served(offline, new_run, new_model)
    answer = offline.get("/v1/forecast", offline.key, **POINT)
    assert answer.status == 200 and answer.headers["x-forecast-run"] == new_run
    predicted = offline.predict(offline.key)
    assert predicted.status == 200 and predicted.json()["model"] == new_model


def test_the_command_serves_with_every_server_on_a_closed_port(
    offline: Offline, tmp_path: Path
) -> None:
    """``climate serve --offline`` itself, in a child process with a local Ray of its own."""
    closed = free_port()  # bound, then closed: nothing listens there
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(
        DATABASE_URL=f"postgresql+psycopg://climate@127.0.0.1:{closed}/climate",
        MODEL_REGISTRY_URL="s3://unreachable/registry",
        REDIS_URL=f"redis://127.0.0.1:{closed}/0",
        S3_ENDPOINT_URL=f"http://127.0.0.1:{closed}",
        RAY_USAGE_STATS_ENABLED="0",
    )
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(_spec().model_dump(mode="json")))
    port = free_port()
    command = [str(Path(sys.executable).parent / "climate"), "serve", "--offline"]
    command += [str(offline.edge), "--config", str(config), "--port", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            body = wait_ready(url, timeout=240)
        except ClimateError:
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
        manifest = verify_sync(offline.edge)
        assert body["run_id"] == manifest.run.run_id
        assert body["model"] == f"{manifest.model.name}:{manifest.model.version}"
        answer = http(url, "GET", "/v1/forecast", {**POINT, "apikey": offline.key})
        assert answer.status == 200, answer.body[:500]
        synced = _run_values(offline.edge / "forecast", manifest.run.run_id)
        np.testing.assert_array_equal(
            np.asarray(answer.json()["hourly"]["t2m"], dtype=np.float32), synced
        )
        online = offline.deployed.get("/v1/forecast", **POINT)
        assert online.json()["hourly"] == answer.json()["hourly"]
        assert http(url, "GET", "/v1/forecast", POINT).status == 401
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
    assert child.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]


def test_no_connection_reached_the_database_redis_or_s3(offline: Offline) -> None:
    assert offline.get("/v1/forecast", offline.key, **POINT).status == 200
    assert offline.tripwire.connections == 0
