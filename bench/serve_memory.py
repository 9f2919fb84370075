"""``python -m bench.serve_memory``: peak memory of the online application holding a global run.

One model and one global 0.25-degree forecast run: a linear t2m model on the 721 x 1440 grid
(:func:`tests.helpers.models.make_linear_model`) and one run of it, 24 lead times, seeded
synthetic values written with the real forecast store code (``RunArrays`` + ``publish``,
:func:`tests.helpers.forecast_runs.write_run`). ``serve.app:build_app`` runs on a Ray of its
own in a child process (:class:`bench.serve_common.ServeHost`, proxy variant ``--proxy``),
one ingress and one predictor replica; the ingress holds the run in memory (99.7 MB of
float32), the predictor the model's ONNX Runtime session.

Memory is the summed PSS (proportional set size: each shared page divided among the processes
that map it; psutil, ``/proc/<pid>/smaps_rollup``) of the Serve processes: the controller, the
proxy (the proxy actor, and with HAProxy its manager actor and the ``haproxy`` process) and
the replicas, sampled every 0.25 s through these phases: ready and idle; point forecasts at
concurrency 16 (``wrk`` or aiohttp); ``--predicts`` sequential ``POST /v1/predict`` on the
global grid (8.3 MB ``.npy`` body, 24 lead times: a 99.7 MB answer); idle again. The rest of
that Ray (raylet, GCS, dashboard and runtime-env agents, log monitor, idle workers, the driver)
is printed beside it, not counted in the bar. Bar: peak summed PSS of the Serve processes
< 3 GiB (3 * 1024**3 bytes). Exit 0 when it holds.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

from bench.serve_common import PROXY_VARIANTS, ServeHost, load_tool, run_load, with_auth_off
from tests.helpers.forecast_runs import global_axes, write_run
from tests.helpers.models import make_linear_model

BAR_BYTES = 3 * 1024**3
NPY = "application/x-npy"
POINT = "/v1/forecast?latitude=52.52&longitude=13.41&hourly=t2m&forecast_hours=24"
PREDICT = "/v1/predict?init_time=2020-01-02T06:00Z&lead_hours=" + ",".join(map(str, range(1, 25)))


def role_of(proc: psutil.Process) -> str:
    """controller, proxy, ingress, predictor, or ray (everything else of that Ray)."""
    try:
        text = " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if text.startswith("ray::ServeController"):
        return "controller"
    if text.startswith(("ray::ProxyActor", "ray::HAProxyManager")) or proc.name() == "haproxy":
        return "proxy"
    if text.startswith("ray::ServeReplica:") and text.split()[0].endswith(":Ingress"):
        return "ingress"
    if text.startswith("ray::ServeReplica:") and text.split()[0].endswith(":Predictor"):
        return "predictor"
    return "ray"


SERVE_ROLES = ("controller", "proxy", "ingress", "predictor")


class PssSampler:
    """Samples, in a thread, the PSS by role of a :class:`ServeHost`'s processes."""

    def __init__(self, host: ServeHost, interval_s: float = 0.25) -> None:
        self.host = host
        self.interval_s = interval_s
        self.phase = "start"
        self.peaks: dict[str, tuple[int, dict[str, int]]] = {}  # phase -> (serve PSS, by role)
        self.peak_ray: dict[str, int] = {}
        self._procs: list[tuple[psutil.Process, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def _refresh(self) -> None:
        self._procs = [(p, role_of(p)) for p in self.host.processes()]

    def sample(self) -> None:
        by_role: dict[str, int] = {}
        for proc, role in self._procs:
            try:
                pss = int(getattr(proc.memory_full_info(), "pss", 0))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            by_role[role] = by_role.get(role, 0) + pss
        serve = sum(v for k, v in by_role.items() if k in SERVE_ROLES)
        if serve > self.peaks.get(self.phase, (-1, {}))[0]:
            self.peaks[self.phase] = (serve, by_role)
        self.peak_ray[self.phase] = max(self.peak_ray.get(self.phase, 0), by_role.get("ray", 0))

    def _run(self) -> None:
        refreshed = 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 2.0:
                self._refresh()
                refreshed = time.monotonic()
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PssSampler:
        self._refresh()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _mb(value: int) -> str:
    return f"{value / 1024**2:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_memory", description=__doc__)
    parser.add_argument("--proxy", default="haproxy+throughput", choices=list(PROXY_VARIANTS))
    parser.add_argument("--predicts", type=int, default=3, help="sequential predict requests")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        lat, lon = global_axes(721, 1440)
        model = workdir / "linear.onnx"
        card = make_linear_model(model, lat, lon)
        store = workdir / "forecast.zarr"
        write_run(str(store), card, leads=24)
        fields = np.random.default_rng(0).normal(288.0, 5.0, (2, 1, 721, 1440))
        buffer = io.BytesIO()
        np.save(buffer, fields.astype(np.float32))
        body = buffer.getvalue()
        print(
            f"model and run 721x1440, 24 leads, written in {time.perf_counter() - started:.0f} s; "
            f"proxy {args.proxy}; load tool {load_tool()}",
            flush=True,
        )
        fixed = {"min_replicas": 1, "max_replicas": 1}
        serve_args = with_auth_off(
            {
                "forecast_store": str(store),
                "model": {"kind": "file", "path": str(model)},
                "device": "cpu",
                "refresh_seconds": 30,
                "limits": {"max_body_bytes": 64 * 2**20},
                "ingress": {"num_cpus": 0.5, "autoscaling": fixed},
                "predictor": {"num_cpus": 1, "autoscaling": fixed},
            }
        )
        host = ServeHost(
            serve_args, PROXY_VARIANTS[args.proxy], database_url=f"sqlite:///{workdir}/db"
        )
        with host, PssSampler(host) as sampler:
            sampler.phase = "ready, idle"
            time.sleep(3)
            sampler.phase = "points, c=16"
            points = run_load(host.url + POINT, 16, 5)
            print(f"points: {points.rps:.0f} req/s, non-2xx {points.non_2xx}", flush=True)
            sampler.phase = "predicts"
            for _ in range(args.predicts):
                request = urllib.request.Request(host.url + PREDICT, data=body, method="POST")
                request.add_header("Content-Type", NPY)
                with urllib.request.urlopen(request, timeout=300) as reply:
                    size = len(reply.read())
            print(f"predict: {args.predicts} answers of {size / 1e6:.1f} MB", flush=True)
            sampler.phase = "idle after"
            time.sleep(3)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    peak = 0
    for phase, (serve, by_role) in sampler.peaks.items():
        if phase == "start":
            continue
        peak = max(peak, serve)
        roles = ", ".join(f"{r} {_mb(by_role.get(r, 0))}" for r in SERVE_ROLES)
        print(
            f"{phase:<14} Serve processes {_mb(serve):>10} ({roles}); rest of Ray "
            f"{_mb(sampler.peak_ray.get(phase, 0))}"
        )
    ok = 0 < peak < BAR_BYTES
    print(
        f"peak summed PSS of the Serve processes: {peak / 1e9:.2f} GB ({_mb(peak)}); "
        f"bar < 3 GiB: {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
