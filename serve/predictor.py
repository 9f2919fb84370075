"""The predictor deployment: ONNX Runtime sessions by model id, requests batched into rollouts.

Model ids are ``name:version``. ``@serve.multiplexed`` keeps the last few loaded per replica
(LRU) and lets Serve route a model's requests to the replicas that hold it; a model is loaded
through :func:`pipelines.models.resolve.resolve_model` (registry fetch, sha256 against the
card) and :meth:`ModelRuntime.load` (provider, handshake with the card), so a corrupt or
mismatched version raises :class:`~pipelines.errors.ModelError` and is never cached.
``@serve.batch`` collects concurrent requests of one model (Serve splits batches by model id);
requests with the same lead times and grid are stacked into one ``rollout`` call.
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
        self.load_model: Callable[[str], Awaitable[ModelRuntime]] = serve.multiplexed(
            max_num_models_per_replica=args.predictor.max_models_per_replica
        )(self._loader())
        self.reconfigure(args.predictor.batching.model_dump())

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply batching settings (Serve's ``user_config``: changed without a restart)."""
        batching = Batching.model_validate(user_config)
        self._batched.set_max_batch_size(batching.max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(  # type: ignore[attr-defined]
            batching.batch_wait_timeout_s
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

    async def predict(self, job: PredictJob) -> np.ndarray:
        """The fields at the job's kept steps, float32 [keep, channels, lat, lon]."""
        result = await self._batched(job)
        if isinstance(result, BaseException):
            raise result
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, jobs: list[PredictJob]) -> list[np.ndarray | ModelError]:
        model = serve.get_multiplexed_model_id()  # one model per batch: Serve splits by id
        try:
            runtime = await self.load_model(model)
        except ModelError as exc:
            return [exc] * len(jobs)
        groups: dict[Any, list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[job.group].append(index)
        results: list[np.ndarray | ModelError] = [ModelError("not computed")] * len(jobs)
        for indices in groups.values():
            members = [jobs[i] for i in indices]
            self.metrics.batch_size.observe(len(members), tags={"model": model})
            outputs: list[np.ndarray | ModelError]
            try:
                outputs = list(await asyncio.to_thread(run_batch, runtime, members))
            except ModelError as exc:
                outputs = [exc] * len(members)
            for i, output in zip(indices, outputs, strict=True):
                results[i] = output
        return results

    def __del__(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
