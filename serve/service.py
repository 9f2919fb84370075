"""What one ingress replica holds: the forecast run, the default model, the registry, the
predictor's handle, and the background task that keeps the first two current."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

from pipelines.db import make_engine
from pipelines.errors import ModelError
from pipelines.models.registry import ModelRecord, ModelRegistry
from pipelines.storage import fsspec_options
from schemas.model_source import ModelFile, RegistryModel
from schemas.serve_config import ServeArgs
from schemas.settings import Settings
from serve.default_model import DefaultModel, ModelFollower
from serve.errors import ApiError
from serve.metrics import ServeMetrics
from serve.ops_metrics import OpsMetrics
from serve.predict_client import PredictClient
from serve.predictor import PredictJob, model_id, split_model_id
from serve.runs import HeldRun, RunHolder
from serve.security import build_guard, guard_warnings

log = logging.getLogger(__name__)


def _replica_id() -> str | None:
    """This replica's id as Serve names it (``None`` outside a replica)."""
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except RayServeException:
        return None


def _uses_database(args: ServeArgs) -> bool:
    """Whether the application reads the database (registry models or API keys in it)."""
    keys_in_database = args.auth.required and args.auth.keys_file is None
    return not args.offline and (isinstance(args.model, RegistryModel) or keys_in_database)


class Service:
    """The state behind the routes of one ingress replica.

    Parameters
    ----------
    args
        The application's arguments.
    settings
        Database and registry URLs (read when the app was built).
    predictor
        Handle to the predictor deployment.
    """

    def __init__(self, args: ServeArgs, settings: Settings, predictor: DeploymentHandle) -> None:
        self.args = args
        self.settings = settings
        self.predictor = predictor
        self.predict_client = PredictClient(predictor, args.predictor.batching)
        self.metrics = ServeMetrics()
        self.guard = build_guard(args.auth, settings, self.metrics, offline=args.offline)
        self.replica = _replica_id()
        options = fsspec_options(args.forecast_store, args.storage, settings)
        self.runs = RunHolder(args.forecast_store, self.metrics, options or None)
        self.models = ModelFollower(
            args.model, self.registry, self._warm, self.metrics, args.refresh_seconds
        )
        # The nightly's and the ingest's state from the ledgers, where the app has a database.
        self.ops = (
            OpsMetrics(settings.database_url, self.metrics.database_errors)
            if _uses_database(args)
            else None
        )
        self._registry: ModelRegistry | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._export_replica_limits()

    # -- background ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start following the forecast store and the registry (needs a running event loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every_period(self.runs.refresh), name="follow-runs"),
            loop.create_task(self._every_period(self.models.refresh), name="follow-models"),
        ]
        if self.ops is not None:
            poll = self.ops.poll
            follow = self._every_period(lambda: asyncio.to_thread(poll))
            self._tasks.append(loop.create_task(follow, name="follow-operations"))

    def _export_replica_limits(self) -> None:
        """Export the configured replica bounds of both deployments (inside a replica only)."""
        try:
            context = serve.get_replica_context()
        except RayServeException:
            return
        deployments = {
            context.deployment: self.args.ingress.autoscaling,
            self.predictor.deployment_name: self.args.predictor.autoscaling,
        }
        for deployment, scaling in deployments.items():
            tags = {"application": context.app_name, "deployment": deployment}
            self.metrics.replicas_max.set(scaling.max_replicas, tags=tags)
            self.metrics.replicas_min.set(scaling.min_replicas, tags=tags)

    async def _every_period(self, refresh: Callable[[], Awaitable[bool]]) -> None:
        while True:
            await refresh()
            await asyncio.sleep(self.args.refresh_seconds)

    def check_alive(self) -> None:
        """Raise when a background task stopped (Serve then replaces the replica)."""
        for task in self._tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise RuntimeError(f"background task {task.get_name()} stopped: {error!r}")

    def stop(self) -> None:
        """Cancel the background tasks and close the database connections."""
        for task in self._tasks:
            task.cancel()
        if self._registry is not None:
            self._registry.engine.dispose()
        if self.guard is not None:
            self.guard.keys.engine.dispose()
        if self.ops is not None:
            self.ops.close()

    # -- state ---------------------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Why the replica is not ready; [] when it holds a forecast run and a model."""
        reasons = []
        if self.runs.current is None:
            reasons.append(self.runs.problem or "no forecast run loaded")
        if self.models.current is None:
            reasons.append(self.models.problem or "no model loaded")
        return reasons

    def warnings(self) -> list[str]:
        """What works in a degraded way (an old run or model kept, the database or Redis out)."""
        problems = [w for w in (self.runs.problem, self.models.problem) if w]
        return problems + guard_warnings(self.guard)

    def held_run(self) -> HeldRun:
        """The run a request answers from (taken once per request); 503 when none is held."""
        held = self.runs.current
        if held is None:
            raise ApiError(503, f"no forecast run is served yet: {self.runs.problem}")
        return held

    def registry(self) -> ModelRegistry:
        """The registry (made on first use; call from a worker thread).

        Raises
        ------
        ModelError
            Offline: there is no registry to reach (the served model is a file).
        """
        if self.args.offline:
            raise ModelError("offline: no model registry; only the synced model is served")
        if self._registry is None:
            engine = make_engine(self.settings.database_url)
            self._registry = ModelRegistry.from_settings(engine, self.settings, self.args.storage)
        return self._registry

    async def records(self, name: str | None = None) -> list[ModelRecord]:
        """Registered versions (of ``name``)."""
        return await asyncio.to_thread(lambda: self.registry().list(name))

    async def record(self, name: str, version: str) -> ModelRecord:
        """One registered version; 404 when unknown."""
        try:
            return await asyncio.to_thread(self.registry().get, name, version)
        except ModelError as exc:
            raise ApiError(404, str(exc)) from exc

    # -- models --------------------------------------------------------------------------------

    async def _warm(self, model: str) -> object:
        response = self.predictor.options(multiplexed_model_id=model).warm.remote()
        return await response

    def _default(self) -> DefaultModel:
        current = self.models.current
        if current is None:
            raise ApiError(503, f"no model is served yet: {self.models.problem}")
        return current

    async def choose_model(self, asked: str | None) -> DefaultModel:
        """The model a request names (``name:version`` or ``name``), or the default.

        Raises
        ------
        ApiError
            404 for a model this application does not serve; 503 before a default is loaded.
        """
        if asked is None or not asked.strip():
            return self._default()
        asked = asked.strip()
        current = self.models.current
        if current is not None and asked in {current.model_id, current.card.name}:
            return current
        if isinstance(self.args.model, ModelFile):
            served = current.model_id if current else "none loaded yet"
            raise ApiError(404, f"parameter model: {asked} is not served here ({served})")
        if ":" in asked:
            name, version = split_model_id(asked)
            record = await self.record(name, version)
        else:
            found = await asyncio.to_thread(lambda: self.registry().promoted(asked))
            if found is None:
                raise ApiError(404, f"parameter model: {asked} has no promoted version")
            record = found
        if record.status == "retired":
            raise ApiError(404, f"parameter model: {record.name} {record.version} is retired")
        return DefaultModel(model_id(record.name, record.version), record.card)

    async def predict(self, model: DefaultModel, job: PredictJob) -> np.ndarray:
        """The predictor's answer for one job (batched with others); 503 when it fails."""
        return await self.predict_client.predict(model.model_id, job)
