"""``climate predict``: plan and check on the driver, roll out on Ray Data actors, commit once.

The driver checks everything before any compute (model file and card, graph handshake, store
layout, initial and lead times, device), writes the Zarr template and prepares the SQL staging
area. Ray Data then runs a pool of :class:`ForecastWorker` actors over the initial times: each
actor reads its inputs from the analysis store and writes its outputs itself; only counts come
back. The driver commits the SQL rows in one transaction, marks the store complete and records
the run in the run ledger. Any failure aborts the staging area: nothing partial is visible.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine

from pipelines import errors
from pipelines.analysis_store import AnalysisStore
from pipelines.errors import ClimateError, ModelError, SourceError
from pipelines.forecast.plan import ForecastPlan, build_plan
from pipelines.forecast.predictor import ForecastWorker, WorkerSpec
from pipelines.forecast.sql_sink import sql_sink, sql_target
from pipelines.forecast.store import ForecastStore
from pipelines.forecast.zarr_sink import RunArrays
from pipelines.ledger import RunLedger
from pipelines.models.compatibility import check_dataset
from pipelines.models.resolve import resolve_device, resolve_model
from pipelines.models.runtime import ModelRuntime, Provider
from pipelines.ray_data import cluster_resources, is_ray_error, map_with_actors
from pipelines.storage import fsspec_options
from schemas.forecast_config import ForecastConfig
from schemas.model_card import ModelCard
from schemas.settings import Settings

log = logging.getLogger(__name__)
_ERROR_LINE = re.compile(r"pipelines\.errors\.(\w+): (.*)")


class Progress(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str) -> None: ...


@dataclass
class ForecastSummary:
    """What a forecast run did."""

    run_id: str
    status: str
    model: dict[str, str]
    analysis_url: str
    zarr_url: str
    device: str
    init_times: int
    lead_hours: list[int]
    fields: int
    values: int
    rows: int
    checksum: float
    nodes: list[str]
    actors: int
    pids: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def fields_per_second(self) -> float:
        return self.fields / max(self.seconds.get("compute", 0.0), 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "model": self.model,
            "analysis": self.analysis_url,
            "zarr": self.zarr_url,
            "device": self.device,
            "init_times": self.init_times,
            "lead_hours": self.lead_hours,
            "fields": self.fields,
            "values": self.values,
            "rows": self.rows,
            "checksum": self.checksum,
            "nodes": self.nodes,
            "actors": self.actors,
            "pids": self.pids,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _actors(config: ForecastConfig, device: Provider, batches: int) -> int:
    if config.concurrency:
        return min(config.concurrency, batches)
    resources = cluster_resources()
    if device == "cuda":
        fit = int(resources.get("GPU", 0.0) // config.gpus_per_actor)
    else:
        fit = int(resources.get("CPU", 1.0) // config.cpus_per_actor)
    return max(1, min(fit, batches))


def _unwrap(exc: BaseException) -> BaseException:
    """A project error for a failure inside the workers.

    Ray Data passes a worker's exception back as text only (``UserCodeException``), so the
    project error is rebuilt from the last ``<module>.<ErrorClass>: message`` line it names.
    """
    if isinstance(exc, ClimateError) or not is_ray_error(exc):
        return exc
    text = str(exc)
    found = list(_ERROR_LINE.finditer(text))
    if found:
        name, message = found[-1].group(1), found[-1].group(2)
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, ClimateError) and cls is not SourceError:
            return cls(message.strip())
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return ClimateError(f"a forecast worker failed: {last[:500]}")


def _run_actors(
    config: ForecastConfig,
    spec: WorkerSpec,
    plan: ForecastPlan,
    actors: int,
    progress: Progress | None,
) -> list[dict[str, np.ndarray]]:
    items = [{"init": int(s), "index": i} for i, s in enumerate(plan.init_seconds)]
    batches = map_with_actors(
        items,
        ForecastWorker,
        {"spec": spec},
        batch_size=config.batch_size,
        actors=actors,
        cpus_per_actor=config.cpus_per_actor,
        gpus_per_actor=config.gpus_per_actor if spec.device == "cuda" else None,
    )
    if progress:
        progress.stage("forecast", plan.n_inits)
    results = []
    for batch in batches:
        results.append(batch)
        if progress:
            for _ in range(len(batch["init"])):
                progress.advance("forecast")
    return results


def _merge(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = results[0].keys() if results else ()
    return {key: np.concatenate([r[key] for r in results]) for key in keys}


@dataclass(frozen=True)
class PreparedForecast:
    """A checked run, ready to execute: nothing has been written yet."""

    config: ForecastConfig
    card: ModelCard
    plan: ForecastPlan
    spec: WorkerSpec
    actors: int
    zarr_options: dict[str, Any]
    attempt: str
    started: float

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def prepare_forecast(config: ForecastConfig, settings: Settings) -> PreparedForecast:
    """Check everything before any compute; Ray must be initialised.

    Checks the model file against its card (sha256, graph handshake), the card against the
    analysis store (variables, levels, grid), the initial times (with their history) against
    the store's times, the lead times against the model's time step and the configured
    maximum, and the device against the cluster.

    Raises
    ------
    ConfigError, ModelError, SchemaError
        What is wrong and how to fix it; nothing was written.
    """
    started = time.perf_counter()
    model = resolve_model(config.model, settings, config.storage)
    onnx_path, card = model.path, model.card
    options = fsspec_options(config.analysis, config.storage, settings)
    state = AnalysisStore(config.analysis, options).state()
    check_dataset(card, state.layout, where=config.analysis)
    plan = build_plan(config, card, state)
    device = resolve_device(config.device, cluster_resources().get("GPU", 0.0))
    ModelRuntime.load(onnx_path, card, "cpu", threads=1)  # graph handshake before any compute
    run_id = config.run_id or uuid.uuid4().hex
    attempt = uuid.uuid4().hex[:8]
    target = (
        sql_target(settings.database_url, run_id, attempt, config.output.sql_rows_per_copy)
        if config.output.write_sql
        else None
    )
    zarr_options = fsspec_options(config.output.zarr.url, config.storage, settings)
    store = ForecastStore(config.output.zarr.url, zarr_options)
    spec = WorkerSpec(
        onnx_path=str(onnx_path.resolve()),
        card=card,
        device=device,
        threads=max(1, int(config.cpus_per_actor)),
        analysis_url=config.analysis,
        zarr_url=store.run_url(run_id, attempt),
        run_id=run_id,
        lead_hours=plan.lead_hours,
        steps=plan.steps,
        keep_steps=plan.keep_steps,
        sql=target,
        storage_options=options,
    )
    return PreparedForecast(
        config=config,
        card=card,
        plan=plan,
        spec=spec,
        actors=_actors(config, device, math.ceil(plan.n_inits / config.batch_size)),
        zarr_options=zarr_options,
        attempt=attempt,
        started=started,
    )


def execute_forecast(
    prepared: PreparedForecast, engine: Engine, progress: Progress | None = None
) -> ForecastSummary:
    """Run a prepared forecast and record it in the run ledger.

    Parameters
    ----------
    prepared
        From :func:`prepare_forecast`.
    engine
        A migrated engine for the run ledger (the forecasts table is reached through the
        database URL the run was prepared with).
    progress
        Optional progress bars.

    Raises
    ------
    ClimateError
        The run failed; it is recorded as failed, its staged rows are dropped and nothing of
        it is visible in the forecasts table.
    """
    config, card, plan, spec = prepared.config, prepared.card, prepared.plan, prepared.spec
    run_id = spec.run_id
    model = {"name": card.name, "version": card.version, "sha256": card.sha256}
    ledger = RunLedger(engine)
    ledger.start("forecast", config.model_dump(mode="json"), run_id)
    planned = time.perf_counter()
    sink = sql_sink(spec.sql) if spec.sql else None
    store = ForecastStore(config.output.zarr.url, prepared.zarr_options)
    arrays = RunArrays(spec.zarr_url, prepared.zarr_options)
    try:
        arrays.create(
            card,
            plan.init_seconds,
            plan.lead_hours,
            {"run_id": run_id, "model": model, "analysis": config.analysis},
            config.output.zarr.lat_chunk,
            config.output.zarr.lon_chunk,
        )
        if sink:
            sink.prepare(plan.init_seconds)
        t0 = time.perf_counter()
        merged = _merge(_run_actors(config, spec, plan, prepared.actors, progress))
        t1 = time.perf_counter()
        done = np.unique(merged.get("init", np.empty(0, np.int64)))
        if not np.array_equal(done, plan.init_seconds):
            raise ModelError(
                f"run {run_id}: {plan.n_inits - done.size} initial time(s) came back without "
                "a forecast; re-run with the same run id"
            )
        checksum = float(merged["checksum"].sum())
        arrays.finish({"checksum": checksum})
        rows = sink.commit() if sink else 0
        store.publish(run_id, prepared.attempt, config.output.zarr.keep_runs)
        t2 = time.perf_counter()
        summary = ForecastSummary(
            run_id=run_id,
            status="succeeded",
            model=model,
            analysis_url=config.analysis,
            zarr_url=config.output.zarr.url,
            device=",".join(sorted(set(merged["device"].tolist()))),
            init_times=plan.n_inits,
            lead_hours=list(plan.lead_hours),
            fields=plan.n_inits * len(plan.lead_hours) * len(card.channels),
            values=int(merged["values"].sum()),
            rows=rows,
            checksum=checksum,
            nodes=sorted(set(merged["node"].tolist())),
            actors=prepared.actors,
            pids=sorted(set(merged["pid"].tolist())),
            seconds={
                "plan": planned - prepared.started,
                "compute": t1 - t0,
                "commit": t2 - t1,
                "read": float(merged["read_s"].sum()),
                "model": float(merged["model_s"].sum()),
                "zarr": float(merged["zarr_s"].sum()),
                "sql": float(merged["sql_s"].sum()),
                "total": t2 - prepared.started,
            },
        )
    except BaseException as exc:
        error = _unwrap(exc)
        store.discard(run_id, prepared.attempt)
        _abort(sink, ledger, run_id, error)
        if error is not exc:
            raise error from exc
        raise
    ledger.finish(run_id, "succeeded", summary.as_dict())
    return summary


def run_forecast(
    config: ForecastConfig,
    settings: Settings,
    engine: Engine,
    progress: Progress | None = None,
) -> ForecastSummary:
    """Prepare (check) and execute one forecast; see :func:`prepare_forecast` and
    :func:`execute_forecast`. Ray must be initialised."""
    return execute_forecast(prepare_forecast(config, settings), engine, progress)


def _abort(sink: Any, ledger: RunLedger, run_id: str, error: BaseException) -> None:
    text = f"{type(error).__name__}: {error}"[:4000]
    try:
        if sink:
            sink.abort()
    finally:
        ledger.finish(run_id, "failed", error=text)
