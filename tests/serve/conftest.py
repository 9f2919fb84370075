"""One running application for the serve tests: Serve on the suite's local Ray, real HTTP.

A tiny linear t2m model on a 9x12 global grid is registered, evaluated (passing scores recorded
the way ``climate evaluate`` does) and promoted in a registry of this module (SQLite file,
local artefacts); forecast runs are written with the real pipeline
(:func:`pipelines.forecast.runner.run_forecast`). The application starts before any run is
committed, so the first test sees it not ready.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from ray import serve
from sqlalchemy import Engine

from pipelines.db import make_engine, migrate
from pipelines.forecast.runner import run_forecast
from pipelines.models.registry import ModelRegistry
from schemas.model_card import ModelCard
from schemas.settings import Settings
from serve.app import build_app
from tests.helpers.models import linear_graph, write_model
from tests.pipelines.forecast.helpers import forecast_config, make_store
from tests.pipelines.registry_helpers import record_evaluation

MODEL = "tiny-t2m"
REFRESH = 0.5  # seconds
BODY_LIMIT = 64 * 1024
INIT = "2020-01-02T06:00Z"


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Deployed:
    """The running application and what it serves from."""

    url: str
    root: Path
    engine: Engine
    registry: ModelRegistry
    settings: Settings
    analysis: Path
    dataset: xr.Dataset
    forecast_store: Path
    models: dict[str, tuple[Path, ModelCard]] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)

    # -- HTTP ----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        data: bytes | Iterable[bytes] | None = None,
        content_type: str | None = None,
        timeout: float = 60,
    ) -> Answer:
        return http(self.url, method, path, params, data, content_type, timeout=timeout)

    def get(self, path: str, **params: Any) -> Answer:
        return self.request("GET", path, params or None)

    def post_json(self, body: dict[str, Any], path: str = "/v1/predict") -> Answer:
        return self.request(
            "POST", path, data=json.dumps(body).encode(), content_type="application/json"
        )

    # -- registry and runs ---------------------------------------------------------------------

    def add_model(self, a: float, promote: bool = True) -> str:
        """Register (and evaluate and promote) a new version with weight ``a``; its id."""
        version = f"v{len(self.models) + 1}-{uuid.uuid4().hex[:8]}"
        path = self.root / "models" / version / "model.onnx"
        graph = linear_graph(2, 1, len(self.dataset.lat), len(self.dataset.lon), a, 1 - a)
        card = write_model(
            graph,
            path,
            lat=self.dataset.lat.values.tolist(),
            lon=self.dataset.lon.values.tolist(),
            variables=["t2m"],
            history=2,
            name=MODEL,
            version=version,
        )
        self.registry.register(path, card)
        record_evaluation(self.engine, card)
        if promote:
            self.registry.promote(MODEL, version)
        model_id = f"{MODEL}:{version}"
        self.models[model_id] = (path, card)
        return model_id

    def commit_run(self, model_id: str) -> str:
        """A forecast run of one initial time, leads 1..12 h, with ``model_id``'s file."""
        run_id = f"run{len(self.runs) + 1}-{uuid.uuid4().hex[:6]}"
        config = forecast_config(
            self.analysis,
            self.models[model_id][0],
            self.forecast_store,
            run_id=run_id,
            init_times={"kind": "list", "times": [INIT]},
            lead_times={"max_hours": 12, "step_hours": 1},
            batch_size=1,
            concurrency=1,
        )
        run_forecast(config, self.settings, self.engine)
        self.runs.append(run_id)
        return run_id


def http(
    url: str,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    data: bytes | Iterable[bytes] | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Answer:
    """One HTTP request to ``url + path``; any status is an :class:`Answer`."""
    query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
    request = urllib.request.Request(f"{url}{path}{query}", data=data, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, _lower(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, _lower(exc.headers), exc.read())


def deploy_app(
    args: dict[str, Any], env: dict[str, str], name: str, route_prefix: str = "/"
) -> None:
    """Build the application with ``env`` as its environment (only these of
    ``DATABASE_URL``, ``MODEL_REGISTRY_URL``, ``REDIS_URL`` set) and run it on Serve."""
    with pytest.MonkeyPatch.context() as patch:  # what build_app reads from the environment
        for variable in ("DATABASE_URL", "MODEL_REGISTRY_URL", "REDIS_URL"):
            patch.delenv(variable, raising=False)
        for variable, value in env.items():
            patch.setenv(variable, value)
        application = build_app(args)
    serve.run(application, name=name, route_prefix=route_prefix)


@pytest.fixture(scope="module")
def deployed(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The application on a free port, its registry holding one promoted model, no run yet."""
    root = tmp_path_factory.mktemp("serve")
    database_url = f"sqlite:///{root / 'climate.db'}"
    engine = make_engine(database_url)
    migrate(engine)
    settings = Settings(database_url=database_url, model_registry_url=str(root / "registry"))
    registry = ModelRegistry.from_settings(engine, settings, cache=root / "cache")
    dataset = make_store(root / "analysis.zarr", times=60, variables=("t2m",))
    app = Deployed(
        url="",
        root=root,
        engine=engine,
        registry=registry,
        settings=settings,
        analysis=root / "analysis.zarr",
        dataset=dataset,
        forecast_store=root / "forecast.zarr",
    )
    app.add_model(0.75)
    args = {
        "forecast_store": str(app.forecast_store),
        "model": {"name": MODEL, "version": "promoted"},
        "device": "cpu",
        "refresh_seconds": REFRESH,
        "limits": {"max_body_bytes": BODY_LIMIT, "max_predict_lead_hours": 48},
        "auth": {"required": False},  # keys are tested in test_security.py
        "ingress": {"num_cpus": 0.1, "max_ongoing_requests": 32},
        "predictor": {
            "num_cpus": 0.1,
            "max_ongoing_requests": 8,
            "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.02},
            "max_models_per_replica": 2,
        },
    }
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    env = {"DATABASE_URL": database_url, "MODEL_REGISTRY_URL": settings.model_registry_url}
    try:
        deploy_app(args, env, "climate-test")
        app.url = f"http://127.0.0.1:{port}"
        yield app
    finally:
        serve.shutdown()
        engine.dispose()


def _lower(headers: Any) -> dict[str, str]:
    return {str(key).lower(): str(value) for key, value in headers.items()}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fields_for(dataset: xr.Dataset, init: str = INIT, history: int = 2) -> np.ndarray:
    """The analysis fields [history, 1, lat, lon] ending at ``init``."""
    when = np.datetime64(init.replace("Z", ""), "s")
    position = int(np.searchsorted(dataset.time.values.astype("datetime64[s]"), when))
    values = dataset.t2m.values[position - history + 1 : position + 1]
    return np.asarray(values[:, None], dtype=np.float32)
