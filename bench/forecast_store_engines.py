"""Atomic forecast-store designs: plain Zarr v2 run directories + a pointer vs icechunk 1.1.

What it measures, on seeded synthetic float32 ``t2m`` forecasts (shapes ``init x lead x lat x
lon``: 16 x 24 x 181 x 360 and 8 x 12 x 91 x 180), in one process run and on the same data:

* **(B) plain**: the project's layout (Zarr format 2, chunks ``(1, all leads, <=256, <=256)``,
  Blosc zstd 3 + shuffle) written to ``<root>/runs/<run_id>/``: template via
  ``to_zarr(compute=False)``, one ``array[position] = block`` per initial time, then the commit
  (``status`` attribute, consolidated metadata) and the publish: a JSON pointer ``<root>/CURRENT``
  written to a temp file, fsynced and ``os.replace``-d. Readers read ``CURRENT`` and open the run
  directory with plain ``xarray.open_zarr``.
* **(A) icechunk**: the same arrays in an icechunk 1.1 repository on the local filesystem. Zarr
  format 3 (icechunk refuses Zarr v2 metadata keys), the same chunks and the same Blosc settings
  (``zarr.codecs.BloscCodec``). Serial path: one writable session on ``main``, template, the
  per-init writes, one ``commit`` and a tag per run. Fan-out path: the template is committed on
  a run branch (``Session.fork`` refuses a session with uncommitted changes), forks are pickled to
  worker processes, merged back, committed once, then ``main`` is moved to that snapshot with
  ``reset_branch(..., from_snapshot_id=<previous tip>)`` and the run is tagged.
* The plain fan-out path writes the same tasks from the same worker processes.
* **Reads** (latency, median of ``--reads``, each a fresh open): resolve and open (pointer +
  ``open_zarr`` / repository + read-only session + ``open_zarr``), one point's time series
  (every init and lead at one grid point: one chunk per init) and one whole field (one init, one
  lead: every lat/lon chunk of that init). ``chunks=None``, so no dask graph is built.

Every write path runs ``--repeat`` times into the same root (each run a new run id, so later runs
find a previous run in place, as in production), alternating the engine order; the best of the
runs is printed. Worker processes (``forkserver``) are started and given their data before any
timing, so process start-up is not counted; data generation is never counted. Values read back
are checked against the generator (exit 1 on a mismatch). Everything lives in a temp dir that is
removed at the end. Local disk with a warm page cache: S3 latencies are not modelled.

Run::

    python -m bench.forecast_store_engines                # needs icechunk for side (A)
    python -m bench.forecast_store_engines --repeat 3 --workers 2 --reads 7

icechunk 1.1 is not a project dependency (icechunk 2 needs Python >= 3.12): install it in a
separate venv with ``pip install 'icechunk>=1.1,<1.2'``. Without it the plain side is measured,
the missing package is named, and the command exits 0.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import dask.array
import numcodecs
import numpy as np
import xarray as xr
import zarr
import zarr.codecs

SEED = 20240601
START = np.datetime64("2020-01-01T00:00", "s")
MAX_CHUNK = 256  # the project's default lat/lon chunk (pipelines.forecast.zarr_sink)
INSTALL_HINT = "pip install 'icechunk>=1.1,<1.2'"


@dataclass(frozen=True)
class Shape:
    inits: int
    leads: int
    lat: int
    lon: int

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return (self.inits, self.leads, self.lat, self.lon)

    @property
    def chunks(self) -> tuple[int, int, int, int]:
        return (1, self.leads, min(MAX_CHUNK, self.lat), min(MAX_CHUNK, self.lon))

    @property
    def mb(self) -> float:
        return float(np.prod(self.dims)) * 4 / 1e6

    def __str__(self) -> str:
        return "x".join(str(n) for n in self.dims)


SHAPES = (Shape(16, 24, 181, 360), Shape(8, 12, 91, 180))


def load_icechunk() -> ModuleType | None:
    """The icechunk module, quietened (its local storage warns on every open), or None."""
    try:
        import icechunk
    except ImportError:
        return None
    icechunk.set_logs_filter("error")
    return icechunk


# ---------------------------------------------------------------- synthetic data


@lru_cache(maxsize=4)
def forecast_data(shape: Shape, seed: int = SEED) -> np.ndarray:
    """Seeded smooth fields plus noise, float32 ``[init, lead, lat, lon]``."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(90.0, -90.0, shape.lat)
    lon = -180.0 + (360.0 / shape.lon) * np.arange(shape.lon)
    base = 288.0 - 30.0 * np.sin(np.deg2rad(lat))[:, None] ** 2
    out = np.empty(shape.dims, dtype=np.float32)
    hours = np.arange(shape.leads)[:, None, None]
    for i in range(shape.inits):
        wave = 5.0 * np.sin(2 * np.pi * (hours + i) / 24 + np.deg2rad(lon)[None, None, :])
        noise = rng.normal(0.0, 0.5, (shape.leads, shape.lat, shape.lon))
        out[i] = base[None] + wave + noise
    return out


def template(shape: Shape, run_id: str) -> xr.Dataset:
    """The forecast store's template: coordinates written, ``t2m`` a dask-empty placeholder."""
    init = START + np.arange(shape.inits) * np.timedelta64(6, "h")
    lead = np.arange(1, shape.leads + 1).astype("timedelta64[h]")
    empty = dask.array.empty(shape.dims, dtype="float32", chunks=shape.chunks)
    return xr.Dataset(
        {"t2m": (("init_time", "lead_time", "lat", "lon"), empty, {"units": "K"})},
        coords={
            "init_time": init.astype("datetime64[ns]"),
            "lead_time": lead.astype("timedelta64[ns]"),
            "valid_time": (
                ("init_time", "lead_time"),
                (init[:, None] + lead[None, :]).astype("datetime64[ns]"),
            ),
            "lat": np.linspace(90.0, -90.0, shape.lat),
            "lon": -180.0 + (360.0 / shape.lon) * np.arange(shape.lon),
        },
        attrs={"run_id": run_id, "status": "incomplete"},
    )


def encoding(shape: Shape, zarr_format: int) -> dict[str, dict[str, Any]]:
    if zarr_format == 2:
        codec: Any = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)
    else:
        codec = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=4)
    time_units = {"units": "seconds since 1970-01-01", "dtype": "int64"}
    return {
        "t2m": {
            "chunks": shape.chunks,
            "compressors": (codec,),
            "_FillValue": np.float32("nan"),
            "dtype": "float32",
        },
        "init_time": dict(time_units),
        "valid_time": dict(time_units),
        "lead_time": {"units": "hours", "dtype": "int64"},
    }


def batches(shape: Shape, per_task: int) -> list[list[int]]:
    positions = list(range(shape.inits))
    return [positions[i : i + per_task] for i in range(0, shape.inits, per_task)]


# ---------------------------------------------------------------- worker-side tasks


def _init_worker(ready: Any) -> None:
    """Import, generate the data, then wait until every worker has done the same."""
    warnings.simplefilter("ignore", category=UserWarning)
    load_icechunk()
    for shape in SHAPES:
        forecast_data(shape)
    ready.wait(timeout=300)


def _worker_pid(pause: float) -> int:
    time.sleep(pause)
    return os.getpid()


def write_inits(group: zarr.Group, data: np.ndarray, positions: list[int]) -> None:
    array = group["t2m"]
    assert isinstance(array, zarr.Array)
    for position in positions:
        array[int(position)] = data[position]


def plain_task(run_dir: str, shape: Shape, positions: list[int]) -> None:
    group = zarr.open_group(run_dir, mode="r+", zarr_format=2, use_consolidated=False)
    write_inits(group, forecast_data(shape), positions)


def icechunk_task(fork: Any, shape: Shape, positions: list[int]) -> Any:
    """Write into a pickled ``ForkSession`` and send it back to be merged."""
    group = zarr.open_group(fork.store, mode="r+", zarr_format=3, use_consolidated=False)
    write_inits(group, forecast_data(shape), positions)
    return fork


# ---------------------------------------------------------------- design (B): plain Zarr v2


class Clock:
    """Split wall time into named phases: ``clock.lap("template")``."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self.last
        self.last = now

    @property
    def total(self) -> float:
        return self.last - self.start


def publish_pointer(root: Path, run_id: str) -> None:
    """Atomically point ``<root>/CURRENT`` at ``runs/<run_id>`` (temp file, fsync, replace)."""
    tmp = root / f".CURRENT.{uuid.uuid4().hex}"
    with tmp.open("w") as f:
        json.dump({"run_id": run_id, "path": f"runs/{run_id}"}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / "CURRENT")


def plain_write(
    root: Path, shape: Shape, run_id: str, pool: ProcessPoolExecutor | None, per_task: int
) -> dict[str, float]:
    clock = Clock()
    run_dir = root / "runs" / run_id
    write_template(template(shape, run_id), run_dir, shape, 2)
    clock.lap("template")
    if pool is None:
        group = zarr.open_group(run_dir, mode="r+", zarr_format=2, use_consolidated=False)
        write_inits(group, forecast_data(shape), list(range(shape.inits)))
    else:
        tasks = [pool.submit(plain_task, str(run_dir), shape, b) for b in batches(shape, per_task)]
        for task in tasks:
            task.result()
    clock.lap("chunks")
    group = zarr.open_group(run_dir, mode="r+", zarr_format=2, use_consolidated=False)
    group.attrs.update({"status": "complete"})
    zarr.consolidate_metadata(group.store, zarr_format=2)
    publish_pointer(root, run_id)
    clock.lap("publish")
    return {"total": clock.total, **clock.phases}


def write_template(ds: xr.Dataset, target: Any, shape: Shape, zarr_format: int) -> None:
    """Metadata and coordinates only; v2 consolidated (plain), v3 unconsolidated (icechunk)."""
    ds.to_zarr(
        target,
        mode="w",
        compute=False,
        consolidated=zarr_format == 2,
        zarr_format=zarr_format,
        encoding=encoding(shape, zarr_format),
    )


def plain_open(root: Path) -> xr.Dataset:
    pointer = json.loads((root / "CURRENT").read_text())
    return xr.open_zarr(root / pointer["path"], consolidated=True, chunks=None)


# ---------------------------------------------------------------- design (A): icechunk 1.1


def icechunk_repo(ic: ModuleType, root: Path) -> Any:
    return ic.Repository.open(ic.local_filesystem_storage(str(root)))


def icechunk_write(
    ic: ModuleType,
    root: Path,
    shape: Shape,
    run_id: str,
    pool: ProcessPoolExecutor | None,
    per_task: int,
) -> dict[str, float]:
    clock = Clock()
    repo = icechunk_repo(ic, root)
    ds = template(shape, run_id)
    if pool is None:
        session = repo.writable_session("main")
        write_template(ds, session.store, shape, 3)
        clock.lap("template")
        group = zarr.open_group(session.store, mode="r+", zarr_format=3, use_consolidated=False)
        write_inits(group, forecast_data(shape), list(range(shape.inits)))
        clock.lap("chunks")
        group.attrs.update({"status": "complete"})
        snapshot = session.commit(f"forecast run {run_id}")
        repo.create_tag(run_id, snapshot)
        clock.lap("publish")
        return {"total": clock.total, **clock.phases}
    # fan-out: template committed on a run branch, so ``main`` never shows a half-written run
    base = repo.lookup_branch("main")
    branch = f"run-{run_id}"
    repo.create_branch(branch, base)
    session = repo.writable_session(branch)
    write_template(ds, session.store, shape, 3)
    session.commit(f"template {run_id}")
    session = repo.writable_session(branch)
    clock.lap("template")
    tasks = [pool.submit(icechunk_task, session.fork(), shape, b) for b in batches(shape, per_task)]
    forks = [task.result() for task in tasks]
    session.merge(*forks)
    clock.lap("chunks")
    group = zarr.open_group(session.store, mode="r+", zarr_format=3, use_consolidated=False)
    group.attrs.update({"status": "complete"})
    snapshot = session.commit(f"forecast run {run_id}")
    repo.reset_branch("main", snapshot, from_snapshot_id=base)
    repo.create_tag(run_id, snapshot)
    repo.delete_branch(branch)
    clock.lap("publish")
    return {"total": clock.total, **clock.phases}


def icechunk_open(ic: ModuleType, root: Path) -> xr.Dataset:
    session = icechunk_repo(ic, root).readonly_session(branch="main")
    return xr.open_zarr(session.store, consolidated=False, chunks=None)


# ---------------------------------------------------------------- reads and checks


def read_latency(
    open_store: Callable[[], xr.Dataset], shape: Shape, reads: int
) -> dict[str, float]:
    """Median seconds of open / point series / whole field, each from a fresh open."""
    data = forecast_data(shape)
    rng = np.random.default_rng(SEED + 1)
    times: dict[str, list[float]] = {"open": [], "point series": [], "whole field": []}
    for _ in range(reads):
        ilat, ilon = int(rng.integers(shape.lat)), int(rng.integers(shape.lon))
        init, lead = int(rng.integers(shape.inits)), int(rng.integers(shape.leads))
        t0 = time.perf_counter()
        ds = open_store()
        t1 = time.perf_counter()
        series = ds["t2m"].isel(lat=ilat, lon=ilon).values
        t2 = time.perf_counter()
        field = ds["t2m"].isel(init_time=init, lead_time=lead).values
        t3 = time.perf_counter()
        times["open"].append(t1 - t0)
        times["point series"].append(t2 - t1)
        times["whole field"].append(t3 - t2)
        if not (
            np.array_equal(series, data[:, :, ilat, ilon])
            and np.array_equal(field, data[init, lead])
            and ds.attrs.get("status") == "complete"
        ):
            raise AssertionError("values read back differ from the generator")
        ds.close()
    return {name: statistics.median(values) for name, values in times.items()}


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def plain_open_of_icechunk(root: Path) -> str:
    """What plain ``xarray.open_zarr(path)`` makes of an icechunk repository directory."""
    try:
        xr.open_zarr(root)
    except Exception as exc:
        message = str(exc).splitlines()[0].replace(f"'{root}'", "<dir>")
        return f"fails: {type(exc).__name__}: {message[:80]}"
    return "opened (unexpected)"


# ---------------------------------------------------------------- driver


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Started and warmed before any timing: every process up, with its data generated."""
    # forkserver: icechunk's docs warn that 'fork' can deadlock on a repository's file lock
    ctx = mp.get_context("forkserver")
    ready = ctx.Barrier(workers)
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(ready,)
    ) as pool:
        # one submit per worker spawns every process (spawned on demand); the barrier holds
        # each in its initializer until all have their data, so none is still starting later
        pids = {f.result() for f in [pool.submit(_worker_pid, 0.2) for _ in range(workers)]}
        if len(pids) != workers:
            print(f"  (only {len(pids)} of {workers} worker processes warmed)")
        yield pool


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["total"])


def fmt_split(run: dict[str, float]) -> str:
    return " + ".join(f"{k} {v:.3f}" for k, v in run.items() if k != "total")


def bench_shape(
    shape: Shape, ic: ModuleType | None, pool: ProcessPoolExecutor, args: argparse.Namespace
) -> None:
    forecast_data(shape)  # generated before timing
    workdir = Path(tempfile.mkdtemp(prefix="forecast-store-engines-"))
    try:
        roots = {
            ("plain", "serial"): workdir / "plain-serial",
            ("plain", "fan-out"): workdir / "plain-fanout",
            ("icechunk", "serial"): workdir / "ice-serial",
            ("icechunk", "fan-out"): workdir / "ice-fanout",
        }
        for root in roots.values():
            root.mkdir()
        engines = ["plain"] if ic is None else ["plain", "icechunk"]
        if ic is not None:
            for (engine, _), root in roots.items():
                if engine == "icechunk":  # creating the repository is set-up, not a run
                    ic.Repository.create(ic.local_filesystem_storage(str(root)))
        results: dict[tuple[str, str], list[dict[str, float]]] = {k: [] for k in roots}
        for rep in range(args.repeat):
            order = engines if rep % 2 == 0 else engines[::-1]
            for mode in ("serial", "fan-out"):
                use = None if mode == "serial" else pool
                for engine in order:
                    run_id = f"r{rep:02d}-{uuid.uuid4().hex[:8]}"
                    root = roots[(engine, mode)]
                    if engine == "plain":
                        run = plain_write(root, shape, run_id, use, args.per_task)
                    else:
                        assert ic is not None
                        run = icechunk_write(ic, root, shape, run_id, use, args.per_task)
                    results[(engine, mode)].append(run)
        openers: dict[str, Callable[[], xr.Dataset]] = {
            "plain": lambda: plain_open(roots[("plain", "serial")])
        }
        if ic is not None:
            openers["icechunk"] = lambda: icechunk_open(ic, roots[("icechunk", "serial")])
        reads = {}
        for engine, opener in openers.items():
            read_latency(opener, shape, 1)  # warm-up: first-use imports and caches
            reads[engine] = read_latency(opener, shape, args.reads)
        n_tasks = len(batches(shape, args.per_task))
        print(
            f"\nshape {shape} ({shape.mb:.0f} MB float32), chunks {shape.chunks}, "
            f"fan-out: {n_tasks} tasks of <= {args.per_task} inits on {args.workers} processes"
        )
        print(f"  {'seconds (best of ' + str(args.repeat) + ')':<30}{'plain (B)':>11}", end="")
        print(f"{'icechunk (A)':>14}{'A/B':>7}" if ic is not None else "")
        rows: list[tuple[str, float, float | None]] = []
        for mode in ("serial", "fan-out"):
            p = best(results[("plain", mode)])["total"]
            i = best(results[("icechunk", mode)])["total"] if ic is not None else None
            rows.append((f"write {mode}", p, i))
        for op in ("open", "point series", "whole field"):
            rows.append((f"read {op}", reads["plain"][op], reads.get("icechunk", {}).get(op)))
        for name, p, i in rows:
            line = f"  {name:<30}{p:>11.4f}"
            if i is not None:
                line += f"{i:>14.4f}{i / p:>7.2f}"
            print(line)
        for (engine, mode), runs in results.items():
            if runs:
                print(f"    {engine} {mode} split: {fmt_split(best(runs))}")
        sizes = {e: disk_mb(roots[(e, "serial")]) / args.repeat for e in engines}
        print("    on disk per run (MB): " + ", ".join(f"{e} {s:.1f}" for e, s in sizes.items()))
        if ic is not None:
            check = plain_open_of_icechunk(roots[("icechunk", "serial")])
            print(f"    plain xarray.open_zarr(<icechunk repo dir>): {check}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each write path")
    parser.add_argument("--reads", type=int, default=7, help="fresh opens per read figure")
    parser.add_argument("--workers", type=int, default=2, help="fan-out worker processes")
    parser.add_argument("--per-task", type=int, default=4, help="inits per fan-out task")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", category=UserWarning)
    ic = load_icechunk()
    versions = f"zarr {zarr.__version__}, xarray {xr.__version__}, numpy {np.__version__}"
    if ic is None:
        print(f"icechunk is not importable: side (A) needs `{INSTALL_HINT}`; plain side only.")
    else:
        versions += f", icechunk {ic.__version__}"
    print(f"{versions}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    start = time.perf_counter()
    with worker_pool(args.workers) as pool:
        for shape in SHAPES:
            bench_shape(shape, ic, pool, args)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if ic is None:
        print(f"icechunk not measured: install it with `{INSTALL_HINT}` (Python 3.11 venv).")
    else:
        print("A/B > 1: icechunk slower than plain Zarr; < 1: faster.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        sys.exit(1)
