"""``python -m bench.watch_latency``: how soon after its files land is an initial time forecast?

On the bundled sample's grid (ERA5 t2m over the UK, 33 x 49,
``data/sample/era5-2mt-2019-03-uk.grib``) it writes one NetCDF file per hour of the sample's
values, ingests the first ``--history`` hours into a fresh analysis store (the shipped model
reads 25 hours up to each initial time), then runs the watcher (``pipelines.watch``, as
``climate watch`` wires it) on a local prefix and drops the next ``--times`` hours into it one
at a time (write aside, then rename), each after the previous one's forecast committed. The
model is the shipped ``models/t2m-resconv/model.onnx`` (file source), lead times 1..24 h, rows
into the ``forecasts`` table of a SQLite ledger.

For each initial time it measures the seconds from its file landing to its forecast run's
``finished_at`` in the run ledger (the run finishes just after its rows commit), and subtracts
the configured settle delay: what remains is detection (up to one poll), the poll that finds the
settle delay over (up to one more), and the cycle (ingest + forecast). Prints every time, the
median and the worst, and the bar: the worst under 30 s beyond the delay. Exits 0 whatever the
figures (it is a measurement), 1 if an initial time was not forecast exactly once.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr
import yaml
from sqlalchemy import Engine, text

from pipelines.db import make_engine, migrate
from pipelines.ingest.runner import run_ingest
from pipelines.ledger import RunLedger
from pipelines.ray_data import RayDataExecutor, ensure_ray
from pipelines.watch import Watcher, load_setup
from schemas.config import IngestConfig, RayConfig
from schemas.settings import Settings
from schemas.watch_config import WatchConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "era5-2mt-2019-03-uk.grib"
MODEL = ROOT / "models" / "t2m-resconv" / "model.onnx"
BAR_S = 30.0
LEADS = 24


def hourly_files(folder: Path, first: int, count: int) -> list[Path]:
    """One NetCDF file per hour of the sample (hours ``first`` .. ``first + count - 1``)."""
    folder.mkdir(parents=True, exist_ok=True)
    sample = xr.open_dataset(SAMPLE, engine="cfgrib", backend_kwargs={"indexpath": ""})
    paths = []
    for index in range(first, first + count):
        one = (
            sample[["t2m"]]
            .isel(time=[index])
            .drop_vars(["valid_time", "number", "step", "surface"], errors="ignore")
        )
        when = one.time.values[0].astype("datetime64[s]").item()
        path = folder / f"era5-{when:%Y%m%d%H}.nc"
        one.load().to_netcdf(path, encoding={"t2m": {"dtype": "float32"}})
        paths.append(path)
    return paths


def write_configs(work: Path, settle: float, poll: float) -> Path:
    store = work / "analysis.zarr"
    ingest = {"store": {"url": str(store), "chunks": {"time": 48}}}
    forecast = {
        "analysis": str(store),
        "model": {"kind": "file", "path": str(MODEL)},
        "init_times": {"kind": "latest"},
        "lead_times": {"max_hours": LEADS, "step_hours": 1},
        "device": "cpu",
        "batch_size": 1,
        "output": {"zarr": {"url": str(work / "forecast.zarr")}},
    }
    watch = {
        "source": {
            "url": str(work / "incoming"),
            "pattern": r"era5-(?P<time>\d{10})\.nc",
            "kind": "netcdf",
            "variables": ["t2m"],
        },
        "settle_seconds": settle,
        "poll_seconds": poll,
        "ingest": str(work / "ingest.yaml"),
        "forecast": str(work / "forecast.yaml"),
    }
    for name, content in (("ingest", ingest), ("forecast", forecast), ("watch", watch)):
        (work / f"{name}.yaml").write_text(yaml.safe_dump(content))
    return work / "watch.yaml"


def pre_ingest(files: list[Path], work: Path, settings: Settings, engine: Engine) -> None:
    config = IngestConfig.model_validate(
        {
            "source": {"kind": "netcdf", "urls": [str(f) for f in files], "variables": ["t2m"]},
            "store": {"url": str(work / "analysis.zarr"), "chunks": {"time": 48}},
        }
    )
    summary = run_ingest(config, settings, engine, RayDataExecutor())
    if summary.failures:
        raise SystemExit(f"history ingest failed: {summary.failures}")


def run_key(path: Path) -> str:
    return "watch-" + path.stem.removeprefix("era5-")


def drop_one_at_a_time(
    files: list[Path], incoming: Path, engine: Engine, landed: dict[str, float], stop: Watcher
) -> None:
    """Land each file (rename into the prefix), then wait for its forecast to commit."""
    runs = RunLedger(engine)
    incoming.mkdir(parents=True, exist_ok=True)
    try:
        for path in files:
            target = incoming / path.name
            partial = incoming / f".{path.name}.part"
            shutil.copyfile(path, partial)
            partial.replace(target)
            landed[run_key(path)] = time.time()
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                record = runs.get(run_key(path))
                if record and record.status in ("succeeded", "failed"):
                    break
                time.sleep(0.1)
            time.sleep(0.5)
    finally:
        stop.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch_latency", description=__doc__)
    parser.add_argument("--times", type=int, default=20, help="initial times dropped")
    parser.add_argument("--history", type=int, default=48, help="hours ingested beforehand")
    parser.add_argument("--settle", type=float, default=10.0, help="settle_seconds")
    parser.add_argument("--poll", type=float, default=5.0, help="poll_seconds (config default)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-watch-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return measure(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, args: argparse.Namespace) -> int:
    history = hourly_files(work / "history", 0, args.history)
    drops = hourly_files(work / "staging", args.history, args.times)
    url = f"sqlite:///{work / 'climate.db'}"
    settings = Settings(database_url=url, ray_address=None)
    engine = make_engine(url)
    migrate(engine)
    ensure_ray(RayConfig(), settings)
    pre_ingest(history, work, settings, engine)
    config = yaml.safe_load(write_configs(work, args.settle, args.poll).read_text())
    setup = load_setup(WatchConfig.model_validate(config))
    executor = RayDataExecutor(setup.ingest.ray.concurrency, setup.ingest.ray.cpus_per_task)
    watcher = Watcher(setup, settings, engine, executor)
    landed: dict[str, float] = {}
    dropper = threading.Thread(
        target=drop_one_at_a_time, args=(drops, work / "incoming", engine, landed, watcher)
    )
    started = time.perf_counter()
    dropper.start()
    watcher.run()
    dropper.join()
    wall = time.perf_counter() - started
    return report(engine, drops, landed, args, wall)


def report(
    engine: Engine,
    drops: list[Path],
    landed: dict[str, float],
    args: argparse.Namespace,
    wall: float,
) -> int:
    runs = RunLedger(engine)
    with engine.connect() as conn:
        counts = dict(
            conn.execute(text("SELECT run_id, count(*) FROM forecasts GROUP BY run_id")).all()
        )
    print(f"machine: {platform.processor() or platform.machine()}, {platform.node()}")
    print(
        f"{len(drops)} initial times, settle {args.settle:g} s, poll {args.poll:g} s, "
        f"model {MODEL.relative_to(ROOT)}, leads 1..{LEADS} h, wall {wall:.0f} s"
    )
    print(f"{'initial time':<14}{'landed->committed s':>21}{'beyond settle s':>17}{'cycle s':>9}")
    beyond, wrong = [], []
    expected_rows = LEADS * 33 * 49
    for path in drops:
        key = run_key(path)
        watch, forecast = runs.get(key), runs.get(f"{key}-forecast")
        if not (watch and forecast and forecast.finished_at and watch.status == "succeeded"):
            wrong.append(f"{key}: {watch.status if watch else 'never started'}")
            continue
        if counts.get(f"{key}-forecast") != expected_rows:
            wrong.append(f"{key}: {counts.get(f'{key}-forecast')} rows, not {expected_rows}")
        latency = forecast.finished_at.astimezone(UTC).timestamp() - landed[key]
        beyond.append(latency - args.settle)
        cycle = float((watch.summary or {}).get("seconds", np.nan))
        print(f"{key[6:]:<14}{latency:>21.1f}{latency - args.settle:>17.1f}{cycle:>9.1f}")
    if beyond:
        median, worst = statistics.median(beyond), max(beyond)
        verdict = "holds" if worst < BAR_S else "fails"
        print(f"beyond the settle delay: median {median:.1f} s, worst {worst:.1f} s")
        print(f"bar: worst under {BAR_S:.0f} s beyond the delay -> {verdict}")
    for line in wrong:
        print(f"NOT FORECAST ONCE: {line}")
    print(f"measured {datetime.now(UTC):%Y-%m-%dT%H:%MZ}")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
