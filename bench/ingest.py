"""``python -m bench.ingest [--gb 1.2] [--workdir DIR]``: Ray Data ingest vs the one-machine
xarray/dask baseline, on the same seeded synthetic NetCDF files, same chunks, same codec.

Measures input throughput (MB/s of NetCDF bytes read), their ratio (ray / baseline), and the
peak summed RSS of the ingest's processes. Exit status 0 unless the two stores differ (1).
See bench/README.md for what exactly is counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
VARIABLES = ("t2m", "msl", "u10")
RESOLUTION = 0.5  # 361 x 720, global
TIMES_PER_FILE = 24  # one day of hourly fields per file
CHUNKS = {"time": 24, "lat": 181, "lon": 360}  # one file per time chunk; 6.3 MB chunks
CODEC = {"codec": "zstd", "level": 3, "shuffle": True}  # the project default
SEED = 20240601
START = "2023-01-01"
BAR_RATIO = 1.0
BAR_RSS_BYTES = 2 * 1024**3
MB = 1e6


# --- memory --------------------------------------------------------------------------------


@dataclass
class MemoryPeak:
    """Peak of the summed RSS of a set of processes, sampled every ``interval_s``."""

    peak_rss: int = 0
    start_rss: int = 0  # summed RSS when sampling began (for Ray: the idle cluster)
    peak_unshared: int = 0  # RSS minus file-backed and shared pages, at the same peak sample
    peak_pss: int = 0  # summed PSS: each shared page divided among the processes that map it
    processes_at_peak: dict[str, int] = field(default_factory=dict)  # role -> RSS at the peak
    samples: int = 0
    processes_seen: int = 0


def _role(proc: psutil.Process) -> str:
    try:
        name = proc.name()
        cmdline = " ".join(proc.cmdline()[:3])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    text = f"{name} {cmdline}"
    for marker, role in (
        ("DashboardAgent", "dashboard agent"),
        ("RuntimeEnvAgent", "runtime_env agent"),
        ("runtime_env", "runtime_env agent"),
        ("_StatsActor", "ray data actors"),
        ("_AutoscalingCoordinator", "ray data actors"),
        ("dashboard.py", "dashboard head"),
        ("dashboard/agent", "dashboard agent"),
        ("ray::", "ray workers"),
        ("default_worker", "ray workers"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs_server"),
        ("log_monitor", "log_monitor"),
        ("monitor.py", "monitor"),
    ):
        if marker in text:
            return role
    return "other"


class RssSampler:
    """Samples, in a background thread, the summed RSS of the process tree of ``root_pid``
    (itself and all descendants) plus every process whose command line names ``session``
    (the Ray session directory), so Ray daemons are counted even if re-parented.

    The process set is refreshed every ``refresh_s`` (new Ray workers appear during a run);
    RSS is read every ``interval_s`` from /proc/<pid>/statm through psutil. PSS is read from
    /proc/<pid>/smaps_rollup every ``pss_interval_s`` only: the kernel walks the page tables of
    the process for it (about 2 ms per Ray process), which at every 50 ms sample would take a
    fifth of a core from the Ray run on a 2-CPU machine and much less from the one-process
    baseline. Between two reads a process's PSS is carried forward by its change in RSS, which
    counts new private pages exactly and new shared pages in full (the estimate tends high).
    """

    def __init__(
        self,
        root_pid: int,
        session: str | None = None,
        interval_s: float = 0.05,
        refresh_s: float = 0.25,
        exclude: set[int] | None = None,
        pss_interval_s: float = 0.25,
    ) -> None:
        self.root_pid, self.session = root_pid, session
        self.interval_s, self.refresh_s = interval_s, refresh_s
        self.pss_interval_s = pss_interval_s
        self._pss: dict[int, tuple[int, int]] = {}  # pid -> (PSS, RSS) at the last PSS read
        self._last_pss_read = -math.inf
        self.exclude = exclude or set()
        self.result = MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._procs: dict[int, psutil.Process] = {}
        self._seen: set[int] = set()

    def _refresh(self) -> None:
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.root_pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
        if self.session:
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = proc.info.get("cmdline") or []
                if any(self.session in part for part in cmdline):
                    found.setdefault(proc.pid, proc)
        for pid in self.exclude:
            found.pop(pid, None)
        # keep the Process objects already known (psutil checks pid reuse with them)
        self._procs = {pid: self._procs.get(pid, proc) for pid, proc in found.items()}
        self._seen.update(self._procs)

    def _process_pss(self, pid: int, proc: psutil.Process, read_pss: bool) -> tuple[int, int, int]:
        """RSS, shared and PSS of one process (PSS read, or carried forward by the RSS change)."""
        if read_pss or pid not in self._pss:
            full = proc.memory_full_info()
            pss = getattr(full, "pss", full.rss)
            self._pss[pid] = (pss, full.rss)
            return full.rss, getattr(full, "shared", 0), pss
        info = proc.memory_info()
        last_pss, last_rss = self._pss[pid]
        return info.rss, getattr(info, "shared", 0), max(0, last_pss + info.rss - last_rss)

    def _sample(self) -> int:
        total = unshared = pss = 0
        per_pid: dict[int, int] = {}
        now = time.monotonic()
        read_pss = now - self._last_pss_read >= self.pss_interval_s
        if read_pss:
            self._last_pss_read = now
        for pid, proc in list(self._procs.items()):
            try:
                rss, shared, process_pss = self._process_pss(pid, proc, read_pss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            per_pid[pid] = rss
            total += rss
            unshared += rss - shared
            pss += process_pss
        self.result.samples += 1
        self.result.peak_pss = max(self.result.peak_pss, pss)
        if total > self.result.peak_rss:
            self.result.peak_rss, self.result.peak_unshared = total, unshared
            roles: dict[str, int] = {}
            for pid, rss in per_pid.items():
                role = "driver" if pid == self.root_pid else _role(self._procs[pid])
                roles[role] = roles.get(role, 0) + rss
            self.result.processes_at_peak = roles
        return total

    def _run(self) -> None:
        next_refresh = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                self._refresh()
                next_refresh = now + self.refresh_s
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._refresh()
        self.result.start_rss = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.result.processes_seen = len(self._seen)


# --- inputs --------------------------------------------------------------------------------


def generate_inputs(directory: Path, gb: float) -> tuple[list[Path], float]:
    """Seeded synthetic NetCDF files in canonical orientation; returns files and seconds."""
    from tests.helpers.synthetic import regular_grid, write_netcdf_files

    lat, lon = regular_grid(RESOLUTION)
    bytes_per_file = TIMES_PER_FILE * len(VARIABLES) * len(lat) * len(lon) * 4
    n_files = max(1, math.ceil(gb * 1e9 / bytes_per_file))
    if directory.exists():
        shutil.rmtree(directory)
    started = time.perf_counter()
    files = write_netcdf_files(
        directory,
        n_files,
        TIMES_PER_FILE,
        VARIABLES,
        seed=SEED,
        start=START,
        freq="1h",
        resolution=RESOLUTION,
        prefix="era5like",
    )
    return files, time.perf_counter() - started


def warm_page_cache(files: list[Path]) -> float:
    """Read every input once so both runs start from the same (cached) state."""
    started = time.perf_counter()
    for path in files:
        with open(path, "rb") as handle:
            while handle.read(16 * 1024 * 1024):
                pass
    return time.perf_counter() - started


# --- the two runs --------------------------------------------------------------------------


class StageClock:
    """A runner Progress that records when each stage starts and its last item ends."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stages: dict[str, list[float]] = {}

    def stage(self, name: str, total: int) -> None:
        now = time.perf_counter() - self.started
        self.stages[name] = [now, now, float(total)]

    def advance(self, name: str) -> None:
        self.stages[name][1] = time.perf_counter() - self.started


def ingest_config(input_dir: Path, store: Path) -> Any:
    from schemas.config import IngestConfig

    return IngestConfig.model_validate(
        {
            "source": {"kind": "netcdf", "urls": [str(input_dir)], "variables": list(VARIABLES)},
            "store": {"url": str(store), "chunks": CHUNKS, "compression": CODEC},
            "ray": {"num_cpus": os.cpu_count()},
        }
    )


def start_ray() -> tuple[float, str | None]:
    """A local Ray on every CPU, as ``jobs.ingest`` starts it; returns seconds and session."""
    import ray

    from pipelines.ray_data import ensure_ray
    from schemas.config import RayConfig
    from schemas.settings import Settings

    os.environ.pop("RAY_ADDRESS", None)  # always a fresh local cluster, never a remote one
    started = time.perf_counter()
    ensure_ray(RayConfig(num_cpus=os.cpu_count()), Settings(ray_address=None))
    seconds = time.perf_counter() - started
    session = None
    # a private API: if it moves, the driver's process tree still covers a local Ray
    with contextlib.suppress(AttributeError):
        session = str(ray._private.worker.global_worker.node.session_name)
    return seconds, session


def run_ray(input_dir: Path, store: Path, ledger: Path, session: str | None) -> dict[str, Any]:
    from pipelines.db import make_engine, migrate
    from pipelines.ingest.runner import run_ingest
    from pipelines.ray_data import RayDataExecutor
    from schemas.settings import Settings

    config = ingest_config(input_dir, store)
    settings = Settings(database_url=f"sqlite:///{ledger}", ray_address=None)
    engine = make_engine(settings.database_url)
    migrate(engine)
    executor = RayDataExecutor(config.ray.concurrency, config.ray.cpus_per_task)
    clock = StageClock()
    with RssSampler(os.getpid(), session) as sampler:
        started = time.perf_counter()
        clock.started = started
        summary = run_ingest(config, settings, engine, executor, clock)
        seconds = time.perf_counter() - started
    engine.dispose()
    stages = {
        name: {"start_s": round(a, 3), "end_s": round(b, 3), "items": int(n)}
        for name, (a, b, n) in clock.stages.items()
    }
    return {
        "seconds": seconds,
        "memory": asdict(sampler.result),
        "stages": stages,
        "summary": {
            "status": summary.status,
            "files_ingested": summary.files_ingested,
            "times_added": summary.times_added,
            "chunks_written": summary.chunks_written,
            "failures": summary.failures,
        },
        "parallelism": executor.parallelism,
    }


def baseline_job(files: list[str], store: str) -> dict[str, Any]:
    """The one-machine baseline, as a user would write it (runs in a fresh child process)."""
    import numcodecs
    import xarray as xr

    compressor = numcodecs.Blosc(
        cname=CODEC["codec"],
        clevel=CODEC["level"],
        shuffle=numcodecs.Blosc.SHUFFLE if CODEC["shuffle"] else numcodecs.Blosc.NOSHUFFLE,
    )
    encoding = {
        name: {
            "chunks": tuple(CHUNKS[d] for d in ("time", "lat", "lon")),
            "compressors": (compressor,),
        }
        for name in VARIABLES
    }
    started = time.perf_counter()
    dataset = xr.open_mfdataset(files, engine="netcdf4")
    dataset.to_zarr(store, mode="w", zarr_format=2, consolidated=True, encoding=encoding)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "dask_chunks": {k: list(v) for k, v in dataset.chunks.items()}}


def run_baseline(files: list[Path], store: Path) -> dict[str, Any]:
    """Run ``baseline_job`` in a child interpreter and sample that child's process tree."""
    request = json.dumps({"files": [str(p) for p in files], "store": str(store)})
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", "--baseline-child", request],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with RssSampler(child.pid) as sampler:
        out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"baseline child failed ({child.returncode}):\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    result["memory"] = asdict(sampler.result)
    return result


# --- verification --------------------------------------------------------------------------


def verify(ray_store: Path, baseline_store: Path, files: list[Path]) -> dict[str, Any]:
    """Every value of both stores, compared chunk by chunk; plus a spot check of both against
    the generator itself. Returns the findings; ``identical`` False means they differ."""
    import pandas as pd
    import xarray as xr

    from tests.helpers.synthetic import synthetic_dataset

    problems: list[str] = []
    ray_ds = xr.open_zarr(ray_store)
    base_ds = xr.open_zarr(baseline_store)
    for coord in ("time", "lat", "lon"):
        if not np.array_equal(ray_ds[coord].values, base_ds[coord].values):
            problems.append(f"coordinate {coord} differs")
    compared = 0
    for name in VARIABLES:
        ray_var, base_var = ray_ds[name], base_ds[name]
        if ray_var.dims != base_var.dims or ray_var.shape != base_var.shape:
            problems.append(
                f"{name}: {ray_var.dims}{ray_var.shape} vs {base_var.dims}{base_var.shape}"
            )
            continue
        if ray_var.encoding.get("chunks") != base_var.encoding.get("chunks"):
            problems.append(
                f"{name}: chunks {ray_var.encoding.get('chunks')} vs "
                f"{base_var.encoding.get('chunks')}"
            )
        if ray_var.attrs.get("units") != base_var.attrs.get("units"):
            problems.append(
                f"{name}: units {ray_var.attrs.get('units')!r} vs {base_var.attrs.get('units')!r}"
            )
        for start in range(0, ray_var.sizes["time"], CHUNKS["time"]):
            window = slice(start, start + CHUNKS["time"])
            a = ray_var.isel(time=window).values
            b = base_var.isel(time=window).values
            compared += a.size
            if a.dtype != np.float32 or not np.array_equal(a, b, equal_nan=True):
                bad = int(np.sum(~((a == b) | (np.isnan(a) & np.isnan(b)))))
                problems.append(
                    f"{name}: times {start}..{start + a.shape[0] - 1}: "
                    f"{bad} value(s) differ (dtype {a.dtype} vs {b.dtype})"
                )
    # both could be equally wrong: check a few times against the generator
    times = ray_ds.time.values
    for position in sorted({0, len(times) // 2, len(times) - 1}):
        expected = synthetic_dataset(
            pd.DatetimeIndex([times[position]]), VARIABLES, seed=SEED, resolution=RESOLUTION
        )
        for name in VARIABLES:
            got = ray_ds[name].isel(time=[position]).values
            if not np.array_equal(got, expected[name].values):
                problems.append(f"{name} at {times[position]}: differs from the generator")
    store_bytes = {
        "ray": sum(p.stat().st_size for p in ray_store.rglob("*") if p.is_file()),
        "baseline": sum(p.stat().st_size for p in baseline_store.rglob("*") if p.is_file()),
    }
    return {
        "identical": not problems,
        "problems": problems,
        "values_compared": compared,
        "store_bytes": store_bytes,
    }


# --- report --------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.3f} GB"


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def report(result: dict[str, Any]) -> str:
    inputs, runs = result["inputs"], result["runs"]
    ray_best = min(run["seconds"] for run in runs["ray"])
    base_best = min(run["seconds"] for run in runs["baseline"])
    mb = inputs["bytes"] / MB
    ray_mem = max(run["memory"]["peak_pss"] for run in runs["ray"])
    ray_rss = max(run["memory"]["peak_rss"] for run in runs["ray"])
    base_mem = max(run["memory"]["peak_rss"] for run in runs["baseline"])
    ratio = result["ratio"]
    lines = [
        "== ingest benchmark ==",
        f"machine     : {result['machine']['cpus']} CPUs, {_gib(result['machine']['ram'])} RAM, "
        f"python {result['machine']['python']}",
        f"input       : {inputs['files']} NetCDF4 files, {_gb(inputs['bytes'])} "
        f"({', '.join(VARIABLES)}; {inputs['grid']} grid; {TIMES_PER_FILE} times/file; "
        f"uncompressed), generated in {inputs['generate_s']:.1f} s, "
        f"page cache warmed in {inputs['warm_s']:.1f} s",
        f"store       : Zarr v2, chunks {CHUNKS}, Blosc {CODEC['codec']} level {CODEC['level']} "
        f"shuffle={CODEC['shuffle']}, both runs",
        f"ray start   : {result['ray_start_s']:.1f} s (ray.init before timing; cluster start-up "
        "is not ingest throughput and is not counted)",
        "",
    ]
    for kind in ("ray", "baseline"):
        for i, run in enumerate(runs[kind]):
            mem = run["memory"]
            extra = ""
            if kind == "ray":
                stages = run["stages"]
                parts = []
                if "scan" in stages:
                    parts.append(f"scan {stages['scan']['end_s'] - stages['scan']['start_s']:.1f}s")
                if "scan" in stages and "write" in stages:
                    gap = stages["write"]["start_s"] - stages["scan"]["end_s"]
                    parts.append(f"plan+template {gap:.1f}s")
                if "write" in stages:
                    write = stages["write"]
                    parts.append(f"write {run['seconds'] - write['start_s']:.1f}s")
                extra = f"  [{', '.join(parts)}]"
            lines.append(
                f"{kind:<8} run {i + 1}: {run['seconds']:6.1f} s  {mb / run['seconds']:7.1f} MB/s  "
                f"peak PSS {_gib(mem['peak_pss'])}, RSS {_gib(mem['peak_rss'])} "
                f"(at start {_gib(mem['start_rss'])}, "
                f"unshared at peak {_gib(mem['peak_unshared'])}, "
                f"{mem['processes_seen']} processes){extra}"
            )
    lines += [
        "",
        f"ray Data ingest   : {mb / ray_best:7.1f} MB/s (best of {len(runs['ray'])})",
        f"xarray+dask       : {mb / base_best:7.1f} MB/s (best of {len(runs['baseline'])}, "
        "open_mfdataset -> to_zarr, threaded scheduler)",
        f"ratio ray/baseline: {ratio:.2f}   bar >= {BAR_RATIO:.1f}: "
        f"{'PASS' if ratio >= BAR_RATIO else 'FAIL'}",
        f"peak memory of ingest: {_gib(ray_mem)} summed PSS of the driver and every Ray "
        f"process (shared pages counted once)   bar < "
        f"{_gib(BAR_RSS_BYTES)}: {'PASS' if ray_mem < BAR_RSS_BYTES else 'FAIL'}",
        f"  summed RSS (each shared page once per process, upper bound): {_gib(ray_rss)}",
        "  at peak by role : "
        + ", ".join(
            f"{role} {_gib(rss)}"
            for role, rss in sorted(
                max(runs["ray"], key=lambda r: r["memory"]["peak_rss"])["memory"][
                    "processes_at_peak"
                ].items()
            )
        ),
        f"peak RSS baseline : {_gib(base_mem)} (its process tree)",
        f"stores identical  : {result['verify']['identical']} "
        f"({result['verify']['values_compared']:,} values compared; store sizes "
        f"ray {_gb(result['verify']['store_bytes']['ray'])}, "
        f"baseline {_gb(result['verify']['store_bytes']['baseline'])})",
    ]
    lines += [f"  DIFFERENCE: {p}" for p in result["verify"]["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--gb", type=float, default=1.2, help="input size to generate (GB)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "output" / "bench-ingest")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each, alternating order; the best of each is compared",
    )
    parser.add_argument("--keep", action="store_true", help="keep the inputs and stores")
    parser.add_argument("--baseline-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_child:
        request = json.loads(args.baseline_child)
        print(json.dumps(baseline_job(request["files"], request["store"])))
        return 0

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    input_dir = workdir / "input"
    print(f"generating {args.gb} GB of synthetic NetCDF in {input_dir} ...", flush=True)
    files, generate_s = generate_inputs(input_dir, args.gb)
    input_bytes = sum(p.stat().st_size for p in files)
    warm_s = warm_page_cache(files)
    ray_start_s, session = start_ray()
    runs: dict[str, list[dict[str, Any]]] = {"ray": [], "baseline": []}
    stores: dict[str, Path] = {}
    for i in range(args.repeat):
        order = ("ray", "baseline") if i % 2 == 0 else ("baseline", "ray")
        for kind in order:
            store = workdir / f"{kind}-{i}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            print(f"run {i + 1}/{args.repeat}: {kind} ...", flush=True)
            if kind == "ray":
                ledger = workdir / f"ledger-{i}.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{ledger}{suffix}").unlink(missing_ok=True)
                runs[kind].append(run_ray(input_dir, store, ledger, session))
            else:
                runs[kind].append(run_baseline(files, store))
            if kind in stores and not args.keep:
                shutil.rmtree(stores[kind], ignore_errors=True)
            stores[kind] = store
    print("verifying ...", flush=True)
    checked = verify(stores["ray"], stores["baseline"], files)
    ray_best = min(run["seconds"] for run in runs["ray"])
    base_best = min(run["seconds"] for run in runs["baseline"])
    result = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "ram": psutil.virtual_memory().total,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "inputs": {
            "files": len(files),
            "bytes": input_bytes,
            "variables": list(VARIABLES),
            "grid": f"{180 / RESOLUTION + 1:.0f}x{360 / RESOLUTION:.0f}",
            "times_per_file": TIMES_PER_FILE,
            "seed": SEED,
            "generate_s": generate_s,
            "warm_s": warm_s,
        },
        "store": {"chunks": CHUNKS, "compression": CODEC, "zarr_format": 2},
        "ray_start_s": ray_start_s,
        "runs": runs,
        "ratio": base_best / ray_best,
        "throughput_mb_s": {
            "ray": input_bytes / MB / ray_best,
            "baseline": input_bytes / MB / base_best,
        },
        "bars": {"ratio_min": BAR_RATIO, "peak_rss_max_bytes": BAR_RSS_BYTES},
        "verify": checked,
        "versions": _versions(),
    }
    text = report(result)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"ingest-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"results     : {out}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if not checked["identical"]:
        print("ERROR: the Ray store and the baseline store differ", file=sys.stderr)
        return 1
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("ray", "xarray", "dask", "zarr", "numcodecs", "netCDF4", "numpy")
    return {name: version(name) for name in names}


if __name__ == "__main__":
    sys.exit(main())
