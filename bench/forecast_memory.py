"""``python -m bench.forecast_memory``: peak memory of forecasts on a 0.25-degree global grid.

A synthetic analysis store of 721 x 1440 fields; a linear model on that grid. Run A writes the
forecast Zarr store only (many initial times); run B also writes the PostgreSQL forecasts table
(fewer initial times: 1 M rows per field). Memory is the summed PSS (and RSS, an upper bound) of
the driver, the Ray daemons and every worker, sampled every 50 ms (``bench.ingest.RssSampler``).
Ray is started before sampling. Bar: peak PSS < 4 GB: the pipeline streams, its memory does not
grow with the number of initial times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg

from bench.forecast_common import Timer, forecast_config, smooth_store
from bench.ingest import RssSampler
from pipelines.db import make_engine, migrate
from pipelines.forecast.runner import run_forecast
from pipelines.ray_data import ensure_ray
from schemas.config import RayConfig
from schemas.settings import Settings
from tests.helpers.models import make_linear_model

BAR_BYTES = 4 * 1024**3


def _gib(value: int) -> str:
    return f"{value / 1024**3:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast_memory", description=__doc__)
    parser.add_argument("--inits", type=int, default=24, help="initial times of run A")
    parser.add_argument("--leads", type=int, default=12, help="lead times of run A")
    parser.add_argument("--sql-inits", type=int, default=2, help="initial times of run B")
    parser.add_argument("--sql-leads", type=int, default=2, help="lead times of run B")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-forecast-mem-"))
    name = f"bench_forecast_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    pg_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    failed = False
    try:
        with Timer() as made:
            dataset = smooth_store(workdir / "analysis.zarr", args.inits + 3, 721, 1440)
        print(f"analysis store 721x1440, {dataset.sizes['time']} times: {made.seconds:.1f} s")
        onnx = workdir / "linear.onnx"
        make_linear_model(onnx, dataset.lat.values, dataset.lon.values, history=2)
        ensure_ray(RayConfig(num_cpus=os.cpu_count()), Settings())
        runs = [
            ("A zarr", args.inits, args.leads, False, f"sqlite:///{workdir / 'a.db'}"),
            ("B zarr+postgres", args.sql_inits, args.sql_leads, True, pg_url),
        ]
        for label, inits, leads, sql, url in runs:
            engine = make_engine(url)
            migrate(engine)
            config = forecast_config(
                workdir / "analysis.zarr",
                onnx,
                workdir / f"{label[0]}.zarr",
                inits,
                leads,
                batch_size=1,
            )
            config = config.model_copy(
                update={"output": config.output.model_copy(update={"write_sql": sql})}
            )
            with RssSampler(os.getpid()) as sampler, Timer() as timer:
                summary = run_forecast(config, Settings(database_url=url), engine)
            mem = sampler.result
            ok = mem.peak_pss < BAR_BYTES
            failed |= not ok
            print(
                f"run {label}: {inits} inits x {leads} leads = {summary.fields} fields "
                f"({summary.fields * 721 * 1440 * 4 / 1e9:.1f} GB of float32), "
                f"rows {summary.rows:,}, "
                f"{timer.seconds:.1f} s; peak PSS {_gib(mem.peak_pss)}, RSS {_gib(mem.peak_rss)} "
                f"(idle cluster {_gib(mem.start_rss)}); bar < 4 GiB: {'PASS' if ok else 'FAIL'}"
            )
            print(
                f"    at the RSS peak: { {k: _gib(v) for k, v in mem.processes_at_peak.items()} }"
            )
            engine.dispose()
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
