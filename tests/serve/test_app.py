"""The online application over real HTTP: readiness, models, predict, limits, errors, run swaps
and model promotions while requests flow.

The tests of this module share one running application (``deployed``) and run in file order:
the first sees it before any forecast run exists, the last promotes a corrupt model.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from jobs.serve import load_serve_file, serve_forever
from pipelines.errors import ConfigError, StoreError
from pipelines.forecast import open_forecast_store
from pipelines.forecast.store import CommittedRun, ForecastStore
from pipelines.models.runtime import ModelRuntime
from schemas.serve_config import ServeArgs, ServeFile
from serve.metrics import ServeMetrics
from serve.middleware import INTERNAL_REASON, ObservedApp
from serve.point_answer import RunView
from serve.predict_io import ARROW, NPY, decode_arrow, encode_arrow_request
from serve.runs import HeldRun, RunHolder
from tests.serve.conftest import BODY_LIMIT, INIT, MODEL, REFRESH, Answer, Deployed, fields_for

ROOT = Path(__file__).resolve().parents[2]
LEADS = [1, 3, 6, 12]
POINT = {"latitude": 45.0, "longitude": 0.0, "hourly": "t2m", "cell_selection": "nearest"}
POINT_KELVIN = {**POINT, "temperature_unit": "kelvin", "forecast_hours": 12}


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(REFRESH / 2)
    raise AssertionError(f"not within {timeout} s: {what}")


def _reference(deployed: Deployed, model_id: str, fields: np.ndarray, leads: list[int]) -> Any:
    path, card = deployed.models[model_id]
    runtime = ModelRuntime.load(path, card, "cpu", threads=1)
    hour = np.array([int(INIT[11:13])])
    return runtime.rollout(fields[None], hour, max(leads), tuple(leads))[0]


def _predict(deployed: Deployed, model: str | None = None) -> Answer:
    body: dict[str, Any] = {
        "init_time": INIT,
        "lead_hours": LEADS,
        "fields": fields_for(deployed.dataset).tolist(),
    }
    if model:
        body["model"] = model
    return deployed.post_json(body)


def _error(answer: Answer, status: int) -> str:
    assert answer.status == status, (answer.status, answer.body[:500])
    body = answer.json()
    assert body["error"] is True
    assert "Traceback" not in body["reason"]
    return str(body["reason"])


def _run_values(deployed: Deployed, run_id: str) -> np.ndarray:
    """t2m (K) of the run's cell nearest to POINT, lead times 1..12 h."""
    dataset = open_forecast_store(str(deployed.forecast_store), run_id=run_id)
    cell = dataset.t2m.isel(init_time=-1).sel(lat=45.0, lon=0.0, method="nearest")
    return np.asarray(cell.values, dtype=np.float32)


# -- configuration (no Serve needed) -----------------------------------------------------------


def test_the_shipped_config_is_valid_and_strict(tmp_path: Path) -> None:
    spec = load_serve_file(str(ROOT / "configs/serve.yaml"), port=8123)
    assert spec.http_options.port == 8123
    assert spec.applications[0].import_path == "serve.app:build_app"
    assert spec.applications[0].args.predictor.autoscaling.max_replicas == 2

    data = yaml.safe_load((ROOT / "configs/serve.yaml").read_text())
    data["applications"][0]["args"]["predictor"]["autoscaling"]["max_replica"] = 3
    bad = tmp_path / "serve.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"autoscaling\.max_replica "):
        load_serve_file(str(bad))
    assert serve_forever(str(bad)) == 2  # refused before Ray or Serve start


def test_args_refuse_unknown_keys_and_impossible_values() -> None:
    with pytest.raises(ValueError, match="refresh_secs"):
        ServeArgs.model_validate({"forecast_store": "x", "model": {"name": "m"}, "refresh_secs": 1})
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeArgs.model_validate(
            {
                "forecast_store": "x",
                "model": {"name": "m"},
                "predictor": {"batching": {"max_batch_size": 0}},
            }
        )
    with pytest.raises(ValueError, match="http_option"):
        ServeFile.model_validate({"http_option": {}, "applications": []})
    shorthand = ServeArgs.model_validate({"forecast_store": "x", "model": "t2m-resconv:v2"})
    assert (shorthand.model.kind, shorthand.model.version) == ("registry", "v2")


def test_a_run_that_fails_to_load_leaves_the_old_one_served(
    ray_session: None, tmp_path: Path
) -> None:
    url = str(tmp_path / "forecast.zarr")
    (tmp_path / "forecast.zarr").mkdir()
    store = ForecastStore(url)

    def loader(url: str, committed: CommittedRun, options: Any) -> HeldRun:
        if committed.run_id == "broken":
            raise StoreError(f"{url}: run broken cannot be read")
        axis = np.array([0.0])
        view = RunView(committed.run_id, "m", "v", 0, np.array([1]), axis, axis, {})
        return HeldRun(committed.run_id, committed.path, datetime.now(UTC), view)

    holder = RunHolder(url, ServeMetrics(), loader=loader)
    assert asyncio.run(holder.refresh()) is False and holder.current is None
    store.publish("good", "a", keep_runs=3)
    assert asyncio.run(holder.refresh()) is True
    store.publish("broken", "a", keep_runs=3)
    assert asyncio.run(holder.refresh()) is False
    assert holder.current is not None and holder.current.run_id == "good"
    assert holder.problem is not None and "broken" in holder.problem


def test_an_unexpected_error_is_a_generic_500_without_trace(ray_session: None) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("secret detail")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = ObservedApp(broken, ServeMetrics())
    scope = {"type": "http", "method": "GET", "path": "/v1/x"}
    asyncio.run(app(scope, None, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 500
    body = json.loads(sent[1]["body"])
    assert body == {"error": True, "reason": INTERNAL_REASON}


# -- the running application -------------------------------------------------------------------


@pytest.mark.slow
def test_ready_only_once_a_run_is_held(deployed: Deployed) -> None:
    assert deployed.get("/health").json() == {"alive": True}
    reason = _error(deployed.get("/ready"), 503)
    assert "forecast run" in reason
    _error(deployed.get("/v1/forecast", **POINT), 503)

    run_id = deployed.commit_run(next(iter(deployed.models)))
    ready = _until(lambda: deployed.get("/ready").status == 200, 30, "ready after a run")
    assert ready
    body = deployed.get("/ready").json()
    assert body["run_id"] == run_id
    assert body["model"] == next(iter(deployed.models))


@pytest.mark.slow
def test_openapi_document_lists_the_routes(deployed: Deployed) -> None:
    paths = deployed.get("/openapi.json").json()["paths"]
    assert {"/v1/forecast", "/v1/predict", "/v1/models", "/v1/models/{name}/{version}"} <= set(
        paths
    )
    assert {"/health", "/ready"} <= set(paths)


@pytest.mark.slow
def test_models_lists_the_registry_rows_and_cards(deployed: Deployed) -> None:
    (model_id,) = deployed.models
    listed = deployed.get("/v1/models").json()
    assert listed["default"] == model_id
    assert [row["id"] for row in listed["models"]] == [model_id]
    assert listed["models"][0]["status"] == "promoted"
    name, version = model_id.split(":")
    one = deployed.get(f"/v1/models/{name}/{version}").json()
    assert one["card"]["sha256"] == deployed.models[model_id][1].sha256
    assert "no version" in _error(deployed.get(f"/v1/models/{name}/nope"), 404)
    _error(deployed.get("/no/such/route"), 404)


@pytest.mark.slow
def test_predict_json_equals_the_runtime_rollout(deployed: Deployed) -> None:
    (model_id,) = deployed.models
    answer = _predict(deployed)
    assert answer.status == 200, answer.body[:500]
    body = answer.json()
    assert body["model"] == model_id
    assert body["lead_hours"] == LEADS
    assert body["valid_times"][0] == "2020-01-02T07:00:00Z"
    expected = _reference(deployed, model_id, fields_for(deployed.dataset), LEADS)
    np.testing.assert_array_equal(np.asarray(body["fields"], dtype=np.float32), expected)


@pytest.mark.slow
def test_predict_npy_and_arrow_answer_in_kind(deployed: Deployed) -> None:
    (model_id,) = deployed.models
    fields = fields_for(deployed.dataset)
    expected = _reference(deployed, model_id, fields, LEADS)
    params = {"init_time": INIT, "lead_hours": ",".join(map(str, LEADS))}

    buffer = io.BytesIO()
    np.save(buffer, fields)
    answer = deployed.request("POST", "/v1/predict", params, buffer.getvalue(), NPY)
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["content-type"] == NPY
    assert answer.headers["x-model"] == model_id
    np.testing.assert_array_equal(np.load(io.BytesIO(answer.body)), expected)

    body = encode_arrow_request(fields)
    answer = deployed.request("POST", "/v1/predict", params, body, ARROW)
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["content-type"] == ARROW
    values, metadata = decode_arrow(answer.body)
    np.testing.assert_array_equal(values, expected)
    assert metadata["lead_hours"] == LEADS and metadata["model"] == model_id


@pytest.mark.slow
def test_concurrent_predictions_are_batched_and_each_answered_right(deployed: Deployed) -> None:
    (model_id,) = deployed.models
    fields = fields_for(deployed.dataset)
    expected = _reference(deployed, model_id, fields, LEADS)
    answers: list[Answer] = []
    threads = [
        threading.Thread(target=lambda: answers.append(_predict(deployed))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status for a in answers] == [200] * 8
    for answer in answers:
        values = np.asarray(answer.json()["fields"], dtype=np.float32)
        np.testing.assert_allclose(values, expected, rtol=1e-6)


@pytest.mark.slow
def test_an_oversized_body_is_413(deployed: Deployed) -> None:
    big = b"0" * (BODY_LIMIT + 1)
    reason = _error(deployed.request("POST", "/v1/predict", None, big, NPY), 413)
    assert str(BODY_LIMIT) in reason

    def chunks() -> Any:  # no Content-Length: refused while reading
        for _ in range(BODY_LIMIT // 1024 + 2):
            yield b"x" * 1024

    params = {"init_time": INIT, "lead_hours": "1"}
    _error(deployed.request("POST", "/v1/predict", params, chunks(), NPY), 413)


@pytest.mark.slow
def test_bad_parameters_are_400_naming_them(deployed: Deployed) -> None:
    fields = fields_for(deployed.dataset).tolist()
    cases = {
        "lead_hours": {"init_time": INIT, "lead_hours": [0], "fields": fields},
        "init_time": {"init_time": "2020-01-02T06:00", "lead_hours": [1], "fields": fields},
        "fields": {"init_time": INIT, "lead_hours": [1], "fields": [[1.0]]},
        "colour": {"init_time": INIT, "lead_hours": [1], "fields": fields, "colour": 1},
    }
    for parameter, body in cases.items():
        assert f"parameter {parameter}" in _error(deployed.post_json(body), 400)
    too_far = {"init_time": INIT, "lead_hours": [49], "fields": fields}
    assert "lead_hours" in _error(deployed.post_json(too_far), 400)
    params = {"lead_hours": "1"}
    assert "init_time" in _error(deployed.request("POST", "/v1/predict", params, b"", NPY), 400)
    reason = _error(deployed.get("/v1/forecast", **{**POINT, "latitude": "north"}), 400)
    assert "parameter latitude" in reason
    assert "model" in _error(_predict(deployed, model=f"{MODEL}:nope"), 404)


@pytest.mark.slow
def test_forecast_answers_from_the_run_in_json_and_flatbuffers(deployed: Deployed) -> None:
    run_id = deployed.runs[-1]
    answer = deployed.get("/v1/forecast", **POINT_KELVIN)
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["x-forecast-run"] == run_id
    body = answer.json()
    assert body["run_id"] == run_id
    values = np.asarray(body["hourly"]["t2m"], dtype=np.float32)
    np.testing.assert_array_equal(values, _run_values(deployed, run_id))

    flat = deployed.get("/v1/forecast", **POINT_KELVIN, format="flatbuffers")
    assert flat.status == 200
    assert flat.headers["content-type"] == "application/octet-stream"
    assert len(flat.body) > 0


@pytest.mark.slow
def test_a_newer_run_is_swapped_in_whole_while_requests_flow(deployed: Deployed) -> None:
    old_run = deployed.runs[-1]
    second = deployed.add_model(0.5, promote=False)  # other weights: other values
    seen: list[tuple[str, str, list[float]]] = []
    failed: list[Answer] = []
    stop = threading.Event()

    def fire() -> None:
        while not stop.is_set():
            answer = deployed.get("/v1/forecast", **POINT_KELVIN)
            if answer.status != 200:
                failed.append(answer)
                continue
            body = answer.json()
            seen.append((answer.headers["x-forecast-run"], body["run_id"], body["hourly"]["t2m"]))

    thread = threading.Thread(target=fire)
    thread.start()
    try:
        new_run = deployed.commit_run(second)
        committed = time.monotonic()
        _until(lambda: seen and seen[-1][0] == new_run, 20 * REFRESH + 10, "the new run served")
        delay = time.monotonic() - committed
        time.sleep(4 * REFRESH)
    finally:
        stop.set()
        thread.join()
    assert failed == []
    expected = {run: _run_values(deployed, run) for run in (old_run, new_run)}
    assert not np.array_equal(expected[old_run], expected[new_run])
    order = [header for header, _, _ in seen]
    assert set(order) == {old_run, new_run}
    assert order.index(new_run) > 0 and old_run not in order[order.index(new_run) :]
    for header, body_run, values in seen:
        assert header == body_run
        np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), expected[header])
    assert delay < 20 * REFRESH + 10


@pytest.mark.slow
def test_a_promoted_model_becomes_the_default_without_failed_requests(
    deployed: Deployed,
) -> None:
    old = deployed.get("/ready").json()["model"]
    fields = fields_for(deployed.dataset)
    answers: list[Answer] = []
    stop = threading.Event()

    def fire() -> None:
        while not stop.is_set():
            answers.append(_predict(deployed))

    thread = threading.Thread(target=fire)
    thread.start()
    try:
        new = deployed.add_model(0.6)
        _until(
            lambda: answers and answers[-1].status == 200 and answers[-1].json()["model"] == new,
            20 * REFRESH + 20,
            "the promoted model answering",
        )
        time.sleep(2 * REFRESH)
    finally:
        stop.set()
        thread.join()
    assert [a.status for a in answers if a.status != 200] == []
    models = [a.json()["model"] for a in answers]
    assert set(models) == {old, new}
    assert old not in models[models.index(new) :]
    expected = _reference(deployed, new, fields, LEADS)
    np.testing.assert_array_equal(np.asarray(answers[-1].json()["fields"], np.float32), expected)
    assert deployed.get("/ready").json()["model"] == new


@pytest.mark.slow
def test_a_corrupt_promoted_model_is_never_served(deployed: Deployed) -> None:
    working = deployed.get("/ready").json()["model"]
    corrupt = deployed.add_model(0.9, promote=False)
    name, version = corrupt.split(":")
    stored = Path(deployed.settings.model_registry_url) / name / version / "model.onnx"
    deployed.registry.promote(name, version)  # passes the gate: its evaluation passed
    stored.write_bytes(b"not an onnx model" * 64)  # then its stored file is damaged
    try:
        ready = _until(
            lambda: any(corrupt in w for w in deployed.get("/ready").json().get("warnings", [])),
            20 * REFRESH + 20,
            "the failed switch reported",
        )
        assert ready
        body = deployed.get("/ready").json()
        assert body["model"] == working
        answer = _predict(deployed)
        assert answer.status == 200 and answer.json()["model"] == working
        assert "cannot be used" in _error(_predict(deployed, model=corrupt), 503)
        time.sleep(4 * REFRESH)
        assert deployed.get("/ready").json()["model"] == working
    finally:
        deployed.registry.promote(*working.split(":"))
