"""The ingress's predict client, in a real Serve replica, against a deployment that records calls.

``@serve.batch`` works only inside a replica, so the client runs in :class:`ClientHost`. The
recorder answers each job with its fields plus one (so answers are told apart), raises
ModelError for the model ``broken:1`` and puts a ModelError in the place of a job whose
``init_hour`` is 13: what the predictor does when a model cannot be loaded or a rollout fails.
It works on one call at a time, recording each when its turn comes; a call for ``slow:1`` keeps
the turn for 1 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ray import serve
from ray.serve.handle import DeploymentHandle

from pipelines.errors import ModelError
from schemas.serve_config import Batching
from serve.errors import ApiError
from serve.predict_client import PredictClient
from serve.predictor import PredictJob
from tests.fixtures.s3 import free_port

pytestmark = pytest.mark.slow

APP = "predict-client-test"


@serve.deployment(max_ongoing_requests=16)
class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.turn = asyncio.Lock()  # one call at a time, like a rollout; the others wait

    async def predict(self, jobs: list[PredictJob]) -> list[Any]:
        await self.turn.acquire()  # a call cancelled while it waits here is never recorded
        model = serve.get_multiplexed_model_id()
        self.calls.append((model, len(jobs)))
        if model == "slow:1":  # its turn lasts 1 s even if the call is cancelled sooner
            asyncio.get_running_loop().call_later(1.0, self.turn.release)
            await asyncio.sleep(1.0)
        else:
            self.turn.release()
        if model == "broken:1":
            raise ModelError("broken:1 has a sha256 that does not match its card")
        return [
            ModelError("rollout failed") if job.init_hour == 13 else job.fields + 1.0
            for job in jobs
        ]

    def recorded(self) -> list[tuple[str, int]]:
        return self.calls


@serve.deployment
class ClientHost:
    def __init__(self, recorder: DeploymentHandle, batching: Batching) -> None:
        self.recorder = recorder
        self.client = PredictClient(recorder, batching)

    async def predict_all(self, requests: list[tuple[str, PredictJob]]) -> list[Any]:
        """Every request at once: its answer, or (status, reason) of its ApiError."""
        calls = (self.client.predict(model, one) for model, one in requests)
        answers = await asyncio.gather(*calls, return_exceptions=True)
        return [(a.status, a.reason) if isinstance(a, ApiError) else a for a in answers]

    async def leave_early(self, requests: list[tuple[str, PredictJob]]) -> None:
        """Send the requests, then give them all up once the first call has started."""
        tasks = [asyncio.ensure_future(self.client.predict(model, one)) for model, one in requests]
        while not await self.recorder.recorded.remote():
            await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1.5)  # long enough for a call that was not cancelled to start

    async def recorded(self) -> list[tuple[str, int]]:
        return list(await self.recorder.recorded.remote())


@pytest.fixture(scope="module")
def serve_instance(ray_session: None) -> Iterator[None]:
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    try:
        yield
    finally:
        serve.shutdown()


def job(value: float, init_hour: int = 6) -> PredictJob:
    return PredictJob(np.full((2, 1, 3, 4), value, np.float32), init_hour, (1, 2))


def run(
    batching: Batching, requests: list[tuple[str, PredictJob]]
) -> tuple[list[Any], list[tuple[str, int]]]:
    """A fresh recorder and client host; the answers to ``requests`` sent at once, and the
    calls the recorder got."""
    client_host = serve.run(ClientHost.bind(Recorder.bind(), batching), name=APP, route_prefix=None)
    answers = client_host.predict_all.remote(requests).result()
    return answers, [tuple(c) for c in client_host.recorded.remote().result()]


def test_concurrent_requests_go_in_few_calls_and_each_gets_its_own_answer(
    serve_instance: None,
) -> None:
    batching = Batching(max_batch_size=4, batch_wait_timeout_s=0.2)
    answers, calls = run(batching, [("m:1", job(i)) for i in range(8)])
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, np.full((2, 1, 3, 4), i + 1.0, np.float32))
    assert calls == [("m:1", 4), ("m:1", 4)]


def test_batches_are_split_by_model(serve_instance: None) -> None:
    batching = Batching(max_batch_size=8, batch_wait_timeout_s=0.2)
    answers, calls = run(batching, [("a:1" if i % 2 else "b:1", job(i)) for i in range(6)])
    assert [float(a.flat[0]) for a in answers] == [i + 1.0 for i in range(6)]
    assert sorted(calls) == [("a:1", 3), ("b:1", 3)]


def test_without_batching_each_request_is_its_own_call(serve_instance: None) -> None:
    batching = Batching(max_batch_size=1, batch_wait_timeout_s=0.2)
    answers, calls = run(batching, [("m:1", job(i)) for i in range(4)])
    assert [float(a.flat[0]) for a in answers] == [1.0, 2.0, 3.0, 4.0]
    assert calls == [("m:1", 1)] * 4


def test_failures_reach_only_the_requests_they_concern(serve_instance: None) -> None:
    batching = Batching(max_batch_size=8, batch_wait_timeout_s=0.2)
    requests = [("m:1", job(0)), ("m:1", job(1, init_hour=13)), ("broken:1", job(2))]
    (fine, failed_rollout, broken), calls = run(batching, requests)
    np.testing.assert_array_equal(fine, np.full((2, 1, 3, 4), 1.0, np.float32))
    assert failed_rollout == (503, "model m:1 cannot be used: rollout failed")
    status, reason = broken
    assert status == 503 and "broken:1 cannot be used" in reason and "sha256" in reason
    assert sorted(calls) == [("broken:1", 1), ("m:1", 2)]


def test_a_call_whose_callers_all_left_is_cancelled_before_it_runs(serve_instance: None) -> None:
    client_host = serve.run(
        ClientHost.bind(Recorder.bind(), Batching(max_batch_size=4, batch_wait_timeout_s=0.05)),
        name=APP,
        route_prefix=None,
    )
    # two calls of 4: the first is running when everyone hangs up, the second still waits
    client_host.leave_early.remote([("slow:1", job(i)) for i in range(8)]).result()
    assert [tuple(c) for c in client_host.recorded.remote().result()] == [("slow:1", 4)]
