"""The forecast worker: one ONNX Runtime session; reads, rolls out and writes whole batches.

Ray Data runs it as a pool of actors (``map_batches`` with an actor class); it also runs
without Ray (call it on a batch dict), which is what the bare-loop benchmark and unit tests do.
A batch is a few initial times; the actor reads their inputs from the analysis store, writes
the forecasts into the Zarr store and the SQL staging area, and returns only counts and sums.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.forecast.inputs import InitialConditions
from pipelines.forecast.rows import RowContext
from pipelines.forecast.sql_sink import SqlTarget, batch_writer
from pipelines.forecast.zarr_sink import RunArrays
from pipelines.models.runtime import ModelRuntime, Provider
from pipelines.ray_data import node_id
from schemas.model_card import ModelCard

log = logging.getLogger(__name__)
HOUR = 3600


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs; picklable, built once by the driver."""

    onnx_path: str
    card: ModelCard
    device: Provider
    threads: int
    analysis_url: str
    zarr_url: str
    run_id: str
    lead_hours: tuple[int, ...]
    steps: int
    keep_steps: tuple[int, ...]
    sql: SqlTarget | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)


class ForecastWorker:
    """Callable on a batch ``{"init": int64 epoch seconds, "index": int64 store position}``.

    Returns one row per initial time: ``init``, ``values`` (forecast values written),
    ``rows`` (SQL rows written), ``checksum`` (float64 sum of the values, NaN skipped),
    timings in seconds, the ``node`` and ``device`` it ran on.
    """

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.runtime = ModelRuntime.load(spec.onnx_path, spec.card, spec.device, spec.threads)
        self.inputs = InitialConditions(spec.analysis_url, spec.card, spec.storage_options)
        self.store = RunArrays(spec.zarr_url, spec.storage_options)
        self.writer = (
            batch_writer(spec.sql, RowContext.of(spec.run_id, spec.card)) if spec.sql else None
        )
        self.node = node_id()
        log.info("forecast worker pid %d on %s (%s)", os.getpid(), self.node, self.runtime.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.spec
        init = np.asarray(batch["init"], dtype=np.int64)
        index = np.asarray(batch["index"], dtype=np.int64)
        t0 = time.perf_counter()
        history = self.inputs.read(init)
        t1 = time.perf_counter()
        forecasts = self.runtime.rollout(history, (init // HOUR) % 24, spec.steps, spec.keep_steps)
        t2 = time.perf_counter()
        self.store.write(index, forecasts, spec.card)
        t3 = time.perf_counter()
        rows = self.writer.write(init, spec.lead_hours, forecasts) if self.writer else 0
        t4 = time.perf_counter()
        n = len(init)
        per_init = forecasts.reshape(n, -1)
        return {
            "init": init,
            "values": np.full(n, per_init.shape[1], dtype=np.int64),
            "rows": np.full(n, rows // max(n, 1), dtype=np.int64),
            "checksum": np.asarray(np.nansum(per_init, axis=1, dtype=np.float64)),
            "read_s": np.full(n, (t1 - t0) / n),
            "model_s": np.full(n, (t2 - t1) / n),
            "zarr_s": np.full(n, (t3 - t2) / n),
            "sql_s": np.full(n, (t4 - t3) / n),
            "node": np.full(n, self.node),
            "device": np.full(n, self.runtime.device),
            "pid": np.full(n, os.getpid(), dtype=np.int64),
        }

    def __del__(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
