"""``python -m bench.forecast_sql``: the PostgreSQL forecasts sink vs raw COPY and vs write_sql.

Rows: forecast arrays [init, lead, channel, lat, lon] of a 0.5-degree global grid.

- sink (ours), end to end from the arrays to committed rows: ``prepare`` (day partitions,
  staging tables), ``write`` (binary COPY encoding + COPY, one batch per initial time, as the
  actors do), ``commit`` (index the staging tables, attach them in one transaction).
- baseline 1: raw psycopg binary COPY of the same rows, already encoded (encoding not counted),
  into the same partitioned and indexed ``forecasts`` table (a leaf partition created and
  attached beforehand), committed. Bar: sink/raw >= 0.8.
- baseline 2: Ray Data's built-in ``Dataset.write_sql`` (INSERT executemany per block) into the
  same table, on a subset of the rows (it is slow), rows/s compared. Bar: sink/write_sql >= 10.

Needs PostgreSQL: ``--url`` (default: a fresh database on 127.0.0.1:5432, dropped at the end).
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import ray

from bench.forecast_common import Timer
from pipelines.db import make_engine, migrate
from pipelines.forecast.postgres_sink import conninfo, day_of, day_partition
from pipelines.forecast.rows import COPY_HEADER, COPY_TRAILER, CopyEncoder, RowContext
from pipelines.forecast.sql_sink import batch_writer, sql_sink, sql_target
from pipelines.ray_data import ensure_ray
from schemas.config import RayConfig
from schemas.forecast_tables import FORECAST_COLUMNS
from schemas.settings import Settings

SHA = "0" * 64
INIT0 = 1_577_836_800  # 2020-01-01T00:00Z; all inits on one day: one day partition


def _context(run_id: str, n_lat: int, n_lon: int) -> RowContext:
    return RowContext(
        run_id=run_id,
        model_sha256=SHA,
        channels=(("t2m", None),),
        lat=np.linspace(90.0, -90.0, n_lat),
        lon=-180.0 + (360.0 / n_lon) * np.arange(n_lon),
    )


def _leaf(conn: psycopg.Connection, run_id: str, day: int) -> None:
    """An attached (indexed) leaf partition for ``run_id``: the raw baselines' target."""
    start = datetime.fromtimestamp(day, tz=UTC)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {day_partition(day)} PARTITION OF forecasts FOR VALUES "
        f"FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}') "
        "PARTITION BY LIST (run_id)"
    )
    conn.execute(
        f"CREATE TABLE bench_{run_id} PARTITION OF {day_partition(day)} FOR VALUES IN ('{run_id}')"
    )


def sink_run(url: str, inits: np.ndarray, leads: tuple[int, ...], values: np.ndarray) -> float:
    shape = values.shape
    target = sql_target(url, "sink", uuid.uuid4().hex[:8], rows_per_copy=200_000)
    with Timer() as timer:
        sink = sql_sink(target)
        sink.prepare(inits)
        writer = batch_writer(target, _context("sink", shape[3], shape[4]))
        for b in range(len(inits)):
            writer.write(inits[b : b + 1], leads, values[b : b + 1])
        writer.close()
        rows = sink.commit()
    assert rows == values.size, (rows, values.size)
    return timer.seconds


def raw_copy(url: str, inits: np.ndarray, leads: tuple[int, ...], values: np.ndarray) -> float:
    shape = values.shape
    encoder = CopyEncoder(_context("raw", shape[3], shape[4]))
    chunks = list(encoder.chunks(inits, leads, values, 200_000))
    columns = ", ".join(FORECAST_COLUMNS)
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        _leaf(conn, "raw", day_of(int(inits[0])))
        statement = f"COPY forecasts ({columns}) FROM STDIN (FORMAT BINARY)"
        # The timer stops after the transaction commits (contexts exit in reverse order).
        with (
            Timer() as timer,
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(statement) as copy,
        ):
            copy.write(COPY_HEADER)
            for chunk in chunks:
                copy.write(chunk)
            copy.write(COPY_TRAILER)
        count = conn.execute("SELECT count(*) FROM forecasts WHERE run_id = 'raw'").fetchone()
    assert count and count[0] == values.size
    return timer.seconds


def write_sql(url: str, init: int, leads: tuple[int, ...], values: np.ndarray) -> tuple[float, int]:
    """Ray Data's write_sql of the rows of one initial time; returns seconds and rows."""
    n_lat, n_lon = values.shape[-2:]
    context = _context("raydata", n_lat, n_lon)
    lat, lon = np.meshgrid(context.lat, context.lon, indexing="ij")
    frames = []
    init_time = datetime.fromtimestamp(init, tz=UTC)
    for k, lead in enumerate(leads):
        frames.append(
            pd.DataFrame(
                {
                    "run_id": "raydata",
                    "model_sha256": SHA,
                    "init_time": init_time,
                    "lead_hours": lead,
                    "valid_time": init_time + timedelta(hours=lead),
                    "variable": "t2m",
                    "level": None,
                    "lat": lat.ravel(),
                    "lon": lon.ravel(),
                    "value": values[k, 0].ravel().astype(np.float64),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        _leaf(conn, "raydata", day_of(init))
    dataset = ray.data.from_pandas(frame).repartition(4).materialize()
    marks = ", ".join(["%s"] * len(FORECAST_COLUMNS))
    statement = f"INSERT INTO forecasts ({', '.join(FORECAST_COLUMNS)}) VALUES ({marks})"
    with Timer() as timer:
        dataset.write_sql(statement, lambda: psycopg.connect(conninfo(url)))
    return timer.seconds, len(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast_sql", description=__doc__)
    parser.add_argument("--url", default=None, help="PostgreSQL URL (default: a fresh database)")
    parser.add_argument("--inits", type=int, default=4)
    parser.add_argument("--leads", type=int, default=12)
    parser.add_argument("--lat", type=int, default=361)
    parser.add_argument("--lon", type=int, default=720)
    parser.add_argument("--write-sql-leads", type=int, default=1, help="lead times for write_sql")
    args = parser.parse_args(argv)
    admin = None
    url = args.url
    if url is None:
        name = f"bench_forecast_{uuid.uuid4().hex[:8]}"
        admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True)
        admin.execute(f"CREATE DATABASE {name}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        rng = np.random.default_rng(0)
        shape = (args.inits, args.leads, 1, args.lat, args.lon)
        values = rng.normal(280, 10, shape).astype(np.float32)
        inits = INIT0 + 3600 * np.arange(args.inits, dtype=np.int64)
        leads = tuple(range(1, args.leads + 1))
        rows = values.size
        print(f"rows: {args.inits} inits x {args.leads} leads x {args.lat}x{args.lon} = {rows:,}")
        raw_s = raw_copy(url, inits, leads, values)
        sink_s = sink_run(url, inits, leads, values)
        print(
            f"raw COPY (pre-encoded) into the indexed partitioned table: {raw_s:.1f} s, "
            f"{rows / raw_s:,.0f} rows/s"
        )
        print(f"sink, arrays -> committed rows: {sink_s:.1f} s, {rows / sink_s:,.0f} rows/s")
        ensure_ray(RayConfig(), Settings())
        w_leads = leads[: args.write_sql_leads]
        w_s, w_rows = write_sql(url, int(inits[0]), w_leads, values[0, : len(w_leads)])
        print(f"Ray Data write_sql: {w_rows:,} rows in {w_s:.1f} s, {w_rows / w_s:,.0f} rows/s")
        ratio_raw = raw_s / sink_s
        ratio_ray = (rows / sink_s) / (w_rows / w_s)
        print(
            f"ratio sink/raw COPY: {ratio_raw:.2f}  bar >= 0.8: "
            f"{'PASS' if ratio_raw >= 0.8 else 'FAIL'}"
        )
        print(
            f"ratio sink/write_sql: {ratio_ray:.1f}  bar >= 10: "
            f"{'PASS' if ratio_ray >= 10 else 'FAIL'}"
        )
        return 0 if ratio_raw >= 0.8 and ratio_ray >= 10 else 1
    finally:
        if admin is not None:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (url.rsplit("/", 1)[1],),
            )
            admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]}")
            admin.close()


if __name__ == "__main__":
    raise SystemExit(main())
