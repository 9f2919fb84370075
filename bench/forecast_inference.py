"""``python -m bench.forecast_inference``: pipeline fields/s vs a bare single-process loop.

Both sides read the same analysis Zarr store, run the same ONNX model (a compute-bound CNN from
``tests.helpers.models``) with ONNX Runtime on the same cores, and write the same forecast
Zarr layout. The bare loop is one process: for each batch of initial times, read the inputs,
roll out, write the chunks (no Ray). It runs twice, with 1 and with all intra-op threads; the
faster one is the baseline. The pipeline is ``execute_forecast`` (Ray Data actor pool, one
actor per CPU, 1 ORT thread each), timed from the Zarr template to the committed run, actor
start-up included; Ray itself is started before timing. No SQL on either side (see
``bench.forecast_sql``). Bar: ratio >= 0.85.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from bench.forecast_common import Timer, forecast_config, smooth_store
from pipelines.analysis_store import AnalysisStore
from pipelines.db import make_engine, migrate
from pipelines.forecast.inputs import InitialConditions
from pipelines.forecast.plan import build_plan
from pipelines.forecast.runner import execute_forecast, prepare_forecast
from pipelines.forecast.store import open_forecast_store
from pipelines.forecast.zarr_sink import RunArrays
from pipelines.models.runtime import ModelRuntime
from pipelines.ray_data import ensure_ray
from schemas.config import RayConfig
from schemas.forecast_config import ForecastConfig
from schemas.model_card import ModelCard
from schemas.settings import Settings
from tests.helpers.models import make_cnn_model

BAR = 0.85


def bare_loop(
    config: ForecastConfig, card: ModelCard, onnx: Path, out: Path, threads: int
) -> float:
    """The baseline: one process, no Ray. Returns seconds."""
    plan = build_plan(config, card, AnalysisStore(config.analysis).state())
    with Timer() as timer:
        store = RunArrays(str(out))
        store.create(card, plan.init_seconds, plan.lead_hours, {"bench": "bare"})
        runtime = ModelRuntime.load(onnx, card, "cpu", threads=threads)
        inputs = InitialConditions(config.analysis, card)
        size = config.batch_size
        for start in range(0, plan.n_inits, size):
            init = plan.init_seconds[start : start + size]
            history = inputs.read(init)
            forecasts = runtime.rollout(history, (init // 3600) % 24, plan.steps, plan.keep_steps)
            store.write(np.arange(start, start + len(init)), forecasts, card)
    return timer.seconds


MIN_BARE_SECONDS = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast_inference", description=__doc__)
    parser.add_argument(
        "--inits", type=int, default=336, help="initial times (the bare loop must run >= 30 s)"
    )
    parser.add_argument("--leads", type=int, default=12, help="lead times, 1..N hours")
    parser.add_argument("--lat", type=int, default=181)
    parser.add_argument("--lon", type=int, default=360)
    parser.add_argument("--hidden", type=int, default=32, help="CNN width")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-forecast-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        store = workdir / "analysis.zarr"
        dataset = smooth_store(store, args.inits + 4, args.lat, args.lon)
        onnx = workdir / "cnn.onnx"
        card = make_cnn_model(
            onnx, dataset.lat.values, dataset.lon.values, hidden=args.hidden, layers=4
        )
        fields = args.inits * args.leads
        print(
            f"workload: {args.inits} initial times x {args.leads} lead times = {fields} fields "
            f"of {args.lat}x{args.lon}; CNN hidden {args.hidden}; batch {args.batch_size}; "
            f"{cpus} CPUs"
        )
        bare: dict[int, float] = {}
        for threads in sorted({1, cpus}):
            config = forecast_config(
                store,
                onnx,
                workdir / f"bare{threads}.zarr",
                args.inits,
                args.leads,
                batch_size=args.batch_size,
            )
            bare[threads] = bare_loop(config, card, onnx, workdir / f"bare{threads}.zarr", threads)
            print(
                f"bare loop, 1 process, {threads} ORT thread(s): {bare[threads]:.1f} s, "
                f"{fields / bare[threads]:.1f} fields/s"
            )
        settings = Settings(database_url=f"sqlite:///{workdir / 'bench.db'}")
        engine = make_engine(settings.database_url)
        migrate(engine)
        ensure_ray(RayConfig(num_cpus=cpus), settings)
        config = forecast_config(
            store,
            onnx,
            workdir / "pipeline.zarr",
            args.inits,
            args.leads,
            batch_size=args.batch_size,
            cpus_per_actor=1,
        )
        prepared = prepare_forecast(config, settings)
        started = time.perf_counter()
        summary = execute_forecast(prepared, engine)
        pipeline_s = time.perf_counter() - started
        print(
            f"pipeline, {summary.actors} actors x 1 ORT thread: {pipeline_s:.1f} s "
            f"({summary.seconds['compute']:.1f} s in Ray Data), {fields / pipeline_s:.1f} fields/s"
        )
        best = min(bare.values())
        ratio = best / pipeline_s
        if best < MIN_BARE_SECONDS:
            print(
                f"warning: the best bare loop ran {best:.1f} s < {MIN_BARE_SECONDS} s; "
                "raise --inits so start-up costs do not dominate"
            )
        same = all(
            np.array_equal(
                open_forecast_store(str(workdir / "pipeline.zarr")).t2m.values,
                xr.open_zarr(workdir / f"bare{t}.zarr").t2m.values,
            )
            for t in bare
        )
        print(f"outputs identical to the bare loop's: {same}")
        verdict = "PASS" if ratio >= BAR else "FAIL"
        print(f"ratio pipeline/bare (fields/s, best bare): {ratio:.2f}  bar >= {BAR}: {verdict}")
        return 0 if ratio >= BAR and same else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
