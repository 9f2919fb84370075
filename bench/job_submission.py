"""``python -m bench.job_submission [--repeat 5]``: what running a job through the Ray Job
Submission API costs, against running the same entrypoint directly.

Starts a Ray head of its own (free ports, its own temp dir, all CPUs, killed at the end),
ingests the bundled sample once into a store in a temporary work dir, then measures, alternately,
``--repeat`` times each, a no-op ingest of that store (every file already in the ledger):

- **job**: what ``climate submit ingest --wait`` does (:mod:`jobs.submission`): read and validate
  the config, list the cluster's jobs, submit with the project as ``working_dir`` (the upload is
  content-addressed, so after the first job it is a hash check), then poll the status every
  0.1 s until the job has SUCCEEDED. The clock stops at the first poll that sees it.
- **direct**: ``python -m jobs.ingest --config ...`` as a subprocess, joined to the same head
  (``RAY_ADDRESS`` = its GCS address), from start to exit.

Each run has its own ``run_id`` override, so every job is new work (an already succeeded one
is refused). Prints both medians and the ratio job / direct: the overhead of going through the
job API (runtime env set-up, the supervisor actor, the driver's start under Ray). Run it from
the project root: ``.venv/bin/python -m bench.job_submission``. Exit status 0 unless a run fails.

The head is :class:`tests.helpers.ray_head.LocalHead`, which the submission tests use too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.helpers.ray_head import LocalHead

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "era5-2mt-2019-03-uk.grib"


def _job_seconds(head: LocalHead, config: Path, run_id: str) -> float:
    from jobs.cluster import Cluster
    from jobs.work import load_work, runtime_env

    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # its note: the config is outside ROOT
        work = load_work("ingest", str(config), [f"run_id={run_id}"], ROOT)
    cluster = Cluster.connect(head.dashboard_url)
    job_id = cluster.submit(work, runtime_env(ROOT, os.environ, pass_env=True))
    status = cluster.wait(job_id, timeout_s=600, poll_s=0.1)
    seconds = time.perf_counter() - start
    if status != "SUCCEEDED":
        raise RuntimeError(f"{job_id} ended {status}:\n{cluster.logs(job_id)[-3000:]}")
    return seconds


def _direct_seconds(head: LocalHead, config: Path, run_id: str) -> float:
    env = {**os.environ, "RAY_ADDRESS": head.gcs_address}
    command = [sys.executable, "-m", "jobs.ingest", "--config", str(config)]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--set", f"run_id={run_id}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"direct ingest exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.job_submission", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side (default 5)")
    args = parser.parse_args(argv)

    work_dir = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{work_dir / 'climate.db'}"
    os.environ.pop("RAY_ADDRESS", None)
    config = work_dir / "ingest.yaml"
    source = {"kind": "grib", "urls": [str(SAMPLE)], "variables": ["t2m"]}
    config.write_text(
        yaml.safe_dump({"source": source, "store": {"url": str(work_dir / "a.zarr")}})
    )
    jobs: list[float] = []
    direct: list[float] = []
    try:
        with LocalHead(num_cpus=os.cpu_count() or 1) as head:
            print(f"head at {head.dashboard_url}; first ingest (not timed)", flush=True)
            _direct_seconds(head, config, "bench-first")
            for i in range(args.repeat):
                # alternate which side goes first, so neither always runs on a warmer cluster
                sides = [("job", jobs), ("direct", direct)]
                for name, times in sides if i % 2 == 0 else sides[::-1]:
                    run = _job_seconds if name == "job" else _direct_seconds
                    times.append(run(head, config, f"bench-{name}-{i}"))
                    print(f"  {name:6} run {i + 1}: {times[-1]:6.2f} s", flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    job_median, direct_median = statistics.median(jobs), statistics.median(direct)
    print(f"no-op ingest, median of {args.repeat} ({os.cpu_count()} CPUs):")
    print(f"  Ray job (submit -> SUCCEEDED)   {job_median:6.2f} s")
    print(f"  direct (python -m jobs.ingest)  {direct_median:6.2f} s")
    print(f"  ratio job / direct              {job_median / direct_median:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
