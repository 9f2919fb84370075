"""The predictor deployment: ONNX Runtime sessions by model id, requests batched into rollouts.

Model ids are ``name:version``. ``@serve.multiplexed`` keeps the last few loaded per replica
(LRU) and lets Serve route a model's requests to the replicas that hold it; a model is loaded
through :func:`pipelines.models.resolve.resolve_model` (registry fetch, sha256 against the
card) and :meth:`ModelRuntime.load` (provider, handshake with the card), so a corrupt or
mismatched version raises :class:`~pipelines.errors.ModelError` and is never cached.
Requests are batched twice with ``@serve.batch``: each ingress replica gathers concurrent
requests into one call per model (:mod:`serve.predict_client`), and the predictor merges the
calls that queued while it was busy, up to ``max_batch_size`` jobs. Jobs with the same lead
times and grid are stacked into ``rollout`` calls of at most ``max_batch_size`` jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve
from sqlalchemy import Engine

from pipelines.db import make_engine
from pipelines.errors import ModelError
from pipelines.models.resolve import resolve_device, resolve_model
from pipelines.models.runtime import ModelRuntime
from schemas.model_source import ModelFile, RegistryModel
from schemas.serve_config import Batching, ServeArgs
from schemas.settings import Settings
from serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


def model_id(name: str, version: str) -> str:
    """The multiplexed model id of a version: ``name:version``."""
    return f"{name}:{version}"


def split_model_id(value: str) -> tuple[str, str]:
    """``name:version`` -> (name, version); ModelError for anything else."""
    name, sep, version = value.partition(":")
    if not sep or not name or not version:
        raise ModelError(f"model id {value!r} is not of the form name:version")
    return name, version


@dataclass(frozen=True)
class PredictJob:
    """One request: initial fields, the hour of day of the initial time, the steps to keep."""

    fields: np.ndarray  # float32 [history, channels, lat, lon], oldest first
    init_hour: int  # UTC hour of day of the initial time (the last field)
    keep: tuple[int, ...]  # model steps (1-based, ascending) whose fields are answered

    @property
    def group(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Jobs with the same group are stacked into one rollout."""
        return self.keep, tuple(self.fields.shape)


def run_batch(runtime: ModelRuntime, jobs: list[PredictJob]) -> list[np.ndarray]:
    """One rollout of the stacked jobs: [keep, channels, lat, lon] per job, in order."""
    history = np.stack([job.fields for job in jobs]).astype(np.float32, copy=False)
    hours = np.array([job.init_hour for job in jobs], dtype=np.int64)
    keep = jobs[0].keep
    out = runtime.rollout(history, hours, keep[-1], keep)
    return [out[i] for i in range(len(jobs))]


CallAnswer = list[np.ndarray | ModelError] | ModelError


def _job_count(calls: list[list[PredictJob]]) -> int:
    return sum(len(call) for call in calls)


@serve.deployment(name="Predictor")
class Predictor:
    """ONNX Runtime models by id (``serve.get_multiplexed_model_id``), batched rollouts.

    Parameters
    ----------
    args
        The application's arguments (device, threads, batching, models per replica).
    settings
        Where the registry is (database and artefact URLs), read when the app was built.
    """

    def __init__(self, args: ServeArgs, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.metrics = ServeMetrics()
        self.device = resolve_device(args.device, gpus=args.predictor.num_gpus)
        self._engine: Engine | None = None
        # Calls that queued while a rollout ran are merged (no wait: they arrive gathered), up
        # to max_batch_size jobs; one merged batch at a time. Decorated per replica so that
        # user_config can resize it; Serve splits batches by model id.
        self._merged: Callable[[list[PredictJob]], Awaitable[CallAnswer]] = serve.batch(
            max_batch_size=args.predictor.batching.max_batch_size,
            batch_wait_timeout_s=0.0,
            batch_size_fn=_job_count,
        )(self._run_calls)
        self.load_model: Callable[[str], Awaitable[ModelRuntime]] = serve.multiplexed(
            max_num_models_per_replica=args.predictor.max_models_per_replica
        )(self._loader())
        self.reconfigure(args.predictor.batching.model_dump())

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply batching settings (Serve's ``user_config``: changed without a restart)."""
        self.max_batch_size = Batching.model_validate(user_config).max_batch_size
        # A call never carries more jobs than the ingress gathers (the deployed arguments),
        # so merging takes at least that many; rollouts are cut at max_batch_size.
        deployed = self.args.predictor.batching.max_batch_size
        self._merged.set_max_batch_size(  # type: ignore[attr-defined]
            max(self.max_batch_size, deployed)
        )

    def _loader(self) -> Callable[[str], Awaitable[ModelRuntime]]:
        async def load(model: str) -> ModelRuntime:
            try:
                runtime = await asyncio.to_thread(self._load, model)
            except ModelError:
                self.metrics.model_loads.inc(tags={"model": model, "outcome": "failed"})
                raise
            self.metrics.model_loads.inc(tags={"model": model, "outcome": "ok"})
            return runtime

        return load

    def _registry_engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    def _load(self, model: str) -> ModelRuntime:
        name, version = split_model_id(model)
        source = self.args.model
        if isinstance(source, ModelFile):
            resolved = resolve_model(source, self.settings)
            served = model_id(resolved.card.name, resolved.card.version)
            if served != model:
                raise ModelError(f"model {model} is not served here; this application has {served}")
        else:
            wanted = RegistryModel(name=name, version=version)
            resolved = resolve_model(
                wanted, self.settings, self.args.storage, self._registry_engine()
            )
        return ModelRuntime.load(resolved.path, resolved.card, self.device, self.args.threads)

    async def warm(self) -> dict[str, str]:
        """Load the request's model (its multiplexed id) now; its identity, or ModelError."""
        runtime = await self.load_model(serve.get_multiplexed_model_id())
        return runtime.card.identity()

    async def predict(self, jobs: list[PredictJob]) -> list[np.ndarray | ModelError]:
        """Each job's fields at its kept steps, float32 [keep, channels, lat, lon], in order.

        A job whose rollout failed gets a ModelError in its place; a model that cannot be
        loaded raises ModelError.
        """
        answer = await self._merged(jobs)
        if isinstance(answer, ModelError):
            raise answer
        return answer

    async def _run_calls(self, calls: list[list[PredictJob]]) -> list[CallAnswer]:
        """The merged calls' jobs, stacked into rollouts by lead times and grid."""
        model = serve.get_multiplexed_model_id()  # one model per batch: Serve splits by id
        try:
            runtime = await self.load_model(model)
        except ModelError as exc:
            return [exc] * len(calls)
        jobs = [(c, j) for c, call in enumerate(calls) for j in range(len(call))]
        groups: dict[Any, list[tuple[int, int]]] = defaultdict(list)
        for c, j in jobs:
            groups[calls[c][j].group].append((c, j))
        answers: list[list[np.ndarray | ModelError]] = [
            [ModelError("not computed")] * len(call) for call in calls
        ]
        for members in groups.values():
            for start in range(0, len(members), self.max_batch_size):
                stacked = members[start : start + self.max_batch_size]
                self.metrics.batch_size.observe(len(stacked), tags={"model": model})
                outputs: list[np.ndarray | ModelError]
                try:
                    batch = [calls[c][j] for c, j in stacked]
                    outputs = list(await asyncio.to_thread(run_batch, runtime, batch))
                except ModelError as exc:
                    outputs = [exc] * len(stacked)
                for (c, j), output in zip(stacked, outputs, strict=True):
                    answers[c][j] = output
        return list(answers)

    def __del__(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
