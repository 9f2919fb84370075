"""The ingress side of ``POST /v1/predict``: concurrent requests gathered into predictor calls.

Each request's job waits up to ``batch_wait_timeout_s`` (``@serve.batch``) for others; the
gathered jobs go to the predictor as one call per model (``max_batch_size`` jobs at most), so a
batch costs one Ray call, one routing decision and one answer object instead of one of each per
request. The predictor stacks the jobs into rollouts (:mod:`serve.predictor`). Failures come
back per request as :class:`~serve.errors.ApiError` 503s. A call whose callers have all hung up
is cancelled, so the predictor drops it unless its rollout has started.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from pipelines.errors import ModelError
from schemas.serve_config import Batching
from serve.errors import ApiError, remote_reason
from serve.predictor import PredictJob

log = logging.getLogger(__name__)

# Predictor calls one ingress replica keeps in flight (each carries up to max_batch_size jobs);
# requests beyond them wait in the batch queue, and the replica's max_ongoing_requests bounds it.
CALLS_IN_FLIGHT = 64

Answer = np.ndarray | ApiError


@dataclass(frozen=True)
class ModelJob:
    """One request's job, the model id (``name:version``) it asks for, and whether its caller
    has stopped waiting (a closed connection cancels the request)."""

    model: str
    job: PredictJob
    gone: asyncio.Event = field(default_factory=asyncio.Event, compare=False)


class PredictClient:
    """Sends predictions to the predictor deployment, batched per model.

    Parameters
    ----------
    predictor
        Handle to the predictor deployment.
    batching
        How many jobs one call carries at most and how long a job waits for others.
    """

    def __init__(self, predictor: DeploymentHandle, batching: Batching) -> None:
        self.predictor = predictor
        self.batched = batching.max_batch_size > 1
        # Decorated per client, so each has its own queue (a decorated method shares one).
        self._gathered: Callable[[ModelJob], Awaitable[Answer]] = serve.batch(
            max_batch_size=batching.max_batch_size,
            batch_wait_timeout_s=batching.batch_wait_timeout_s,
            max_concurrent_batches=CALLS_IN_FLIGHT,
        )(self._send_gathered)

    async def predict(self, model: str, job: PredictJob) -> np.ndarray:
        """The fields at the job's kept steps; ApiError 503 when the model or predictor fails."""
        request = ModelJob(model, job)
        try:
            if self.batched:
                answer: Answer = await self._gathered(request)
            else:  # straight through: Serve's batch queue would wait out its timeout for no one
                (answer,) = await self._call(model, [request])
        except asyncio.CancelledError:
            request.gone.set()
            raise
        if isinstance(answer, ApiError):
            raise answer
        return answer

    async def _send_gathered(self, requests: list[ModelJob]) -> list[Answer]:
        """One predictor call per model among the gathered requests, all at once."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            by_model[request.model].append(index)
        answers: list[Answer] = [ApiError(503, "not computed")] * len(requests)

        async def call(model: str, indices: list[int]) -> None:
            outputs = await self._call(model, [requests[i] for i in indices])
            for i, output in zip(indices, outputs, strict=True):
                answers[i] = output

        await asyncio.gather(*(call(model, indices) for model, indices in by_model.items()))
        return answers

    async def _call(self, model: str, requests: list[ModelJob]) -> list[Answer]:
        """One predictor call for requests of one model, by reference: the fields travel
        through Ray's shared-memory object store and the answers arrive as zero-copy views,
        instead of being pickled into gRPC messages (throughput-optimised mode's default)."""
        handle = self.predictor.options(multiplexed_model_id=model, _by_reference=True)
        jobs = [request.job for request in requests]
        response = cast(DeploymentResponse[Any], handle.predict.remote(jobs))  # not a stream
        try:
            outputs = await _unless_all_gone(response, requests)
        except (BackPressureError, DeploymentUnavailableError) as exc:
            wait = getattr(exc, "retry_after_s", None) or 1
            headers = {"Retry-After": str(math.ceil(wait))}
            reason = "the predictor is busy; retry shortly"
            return [ApiError(503, reason, headers) for _ in requests]
        except ModelError as exc:
            reason = f"model {model} cannot be used: {remote_reason(exc)}"
            return [ApiError(503, reason) for _ in requests]
        except (RayError, RayServeException) as exc:
            log.warning("predictor failed for %s: %s", model, remote_reason(exc))
            reason = "the predictor is unavailable; try again shortly"
            return [ApiError(503, reason) for _ in requests]
        if outputs is None:
            return [ApiError(503, "every caller of this call has gone") for _ in requests]
        return [
            ApiError(503, f"model {model} cannot be used: {output}")
            if isinstance(output, ModelError)
            else np.asarray(output)
            for output in outputs
        ]


async def _unless_all_gone(response: DeploymentResponse[Any], requests: list[ModelJob]) -> Any:
    """The call's answer, or None after cancelling it when every caller in it has gone.

    Serve drops a cancelled request still waiting in the predictor's queue, so work that no
    one waits for is not done; a call cancelled here (or with its caller) goes the same way.
    """
    answer = asyncio.ensure_future(response)
    all_gone = asyncio.ensure_future(asyncio.gather(*(r.gone.wait() for r in requests)))
    try:
        await asyncio.wait({answer, all_gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        response.cancel()
        answer.cancel()
        raise
    finally:
        all_gone.cancel()
    if not answer.done():
        response.cancel()
        answer.cancel()
        return None
    return answer.result()
