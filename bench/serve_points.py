"""``python -m bench.serve_points``: point forecasts through Ray Serve vs a bare uvicorn app.

The request: ``GET /v1/forecast?latitude=52.52&longitude=13.41&hourly=t2m&forecast_hours=24``
(bilinear, JSON), answered from one synthetic forecast run held in memory (181 x 360 global
grid, 24 lead times, written with the real forecast store code: ``RunArrays`` + ``publish``).

- **Baseline**: one process, ``uvicorn`` (defaults: uvloop, httptools, one worker, access log
  off) serving ``serve.routes.build_api(service)``: the very FastAPI app of an ingress replica,
  routes, error handlers and metrics middleware included, over a :class:`serve.service.Service`
  that has loaded the same run (``RunHolder.refresh``). No Ray.
- **Serve**: ``serve.app:build_app`` on a Ray of its own in a child process
  (:class:`bench.serve_common.ServeHost`), the ingress fixed at ``--ingress-replicas``
  replicas (2, the shipped config's ``max_replicas``), for each proxy variant, each in its own
  Ray because Serve reads the switches once at start-up:
  ``default`` (Serve's Python proxy actor), ``haproxy`` (``RAY_SERVE_ENABLE_HA_PROXY=1``:
  HAProxy in front, requests go straight to the ingress replicas' own HTTP servers) and
  ``haproxy+throughput`` (plus ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``).

Load: ``wrk`` (one thread, keep-alive; a Lua script reports count, non-2xx and latency
percentiles) or, without ``wrk``, an aiohttp client in a child process; for each side and
concurrency 1, 16 and 64: ``--warmup`` s unmeasured, then ``--seconds`` s measured. Everything
runs on this machine in this run, requests to 127.0.0.1 only. Before the load, the Serve
answer is checked equal to the baseline's (all but ``generationtime_ms``).

Bar, for the fastest variant (best mean requests/s at concurrency 16 and 64): throughput ratio
Serve/baseline >= 0.4 at concurrency 16 and 64, and p50 < 3 ms at concurrency 1.
Exit 0 when it holds, 1 otherwise. Results also go to ``bench/results/serve-points-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.serve_common import (
    PROXY_VARIANTS,
    ROOT,
    LoadResult,
    ServeHost,
    free_port,
    load_tool,
    run_load,
    save_results,
    wait_http,
    with_auth_off,
)
from tests.helpers.forecast_runs import global_axes, write_run
from tests.helpers.models import make_linear_model

QUERY = "/v1/forecast?latitude=52.52&longitude=13.41&hourly=t2m&forecast_hours=24"
CONCURRENCY = (1, 16, 64)
BAR_RATIO = 0.4
BAR_P50_MS = 3.0


def serve_args(store: Path, model: Path, ingress_replicas: int) -> dict[str, Any]:
    """The application's arguments: the ingress fixed at ``ingress_replicas`` replicas."""
    fixed = {"min_replicas": ingress_replicas, "max_replicas": ingress_replicas}
    return with_auth_off(
        {
            "forecast_store": str(store),
            "model": {"kind": "file", "path": str(model)},
            "device": "cpu",
            "refresh_seconds": 30,
            "ingress": {"num_cpus": 0.5, "autoscaling": fixed, "max_ongoing_requests": 64},
            "predictor": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        }
    )


def _baseline_server(store: str, model: str, port: int) -> int:
    """The baseline process: uvicorn serving the ingress replica's FastAPI app, no Ray."""
    import uvicorn

    from schemas.serve_config import ServeArgs
    from schemas.settings import load_settings
    from serve.routes import build_api
    from serve.service import Service

    args = ServeArgs.model_validate(serve_args(Path(store), Path(model), 1))
    service = Service(args, load_settings(), predictor=None)  # type: ignore[arg-type]
    if not asyncio.run(service.runs.refresh()):
        raise SystemExit(f"the baseline could not load the run: {service.runs.problem}")
    uvicorn.run(
        build_api(service), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    return 0


def _answer(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        body: dict[str, Any] = json.load(reply)
    body.pop("generationtime_ms", None)
    return body


def _measure(url: str, warmup: float, seconds: float) -> dict[int, LoadResult]:
    results: dict[int, LoadResult] = {}
    for concurrency in CONCURRENCY:
        run_load(url, concurrency, warmup)
        results[concurrency] = run_load(url, concurrency, seconds)
        r = results[concurrency]
        print(
            f"    c={concurrency:>2}: {r.rps:8.1f} req/s  p50 {r.p50_ms:7.2f} ms  "
            f"p99 {r.p99_ms:7.2f} ms  non-2xx {r.non_2xx}  socket errors {r.socket_errors}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_points", description=__doc__)
    parser.add_argument("--variants", default=",".join(PROXY_VARIANTS), help="comma list")
    parser.add_argument("--ingress-replicas", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured, per concurrency")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured, per concurrency")
    parser.add_argument("--grid", default="181x360", help="lat x lon of the run")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--baseline-server", nargs=3, metavar=("STORE", "MODEL", "PORT"))
    args = parser.parse_args(argv)
    if args.baseline_server:
        store, model, port = args.baseline_server
        return _baseline_server(store, model, int(port))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(PROXY_VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {list(PROXY_VARIANTS)}")
    n_lat, n_lon = (int(v) for v in args.grid.split("x"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-points-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, LoadResult]] = {}
    try:
        lat, lon = global_axes(n_lat, n_lon)
        model = workdir / "linear.onnx"
        card = make_linear_model(model, lat, lon)
        store = workdir / "forecast.zarr"
        write_run(str(store), card, leads=24)
        print(
            f"run {n_lat}x{n_lon}, 24 leads; load tool {load_tool()}; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}; {args.warmup:.0f} s warm-up + "
            f"{args.seconds:.0f} s per concurrency",
            flush=True,
        )
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": f"sqlite:///{workdir}/db"}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.serve_points",
                "--baseline-server",
                str(store),
                str(model),
                str(port),
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_http(base_url + QUERY, 120)
            reference = _answer(base_url + QUERY)
            print("baseline: uvicorn + the ingress's FastAPI app, 1 process", flush=True)
            results["baseline"] = _measure(base_url + QUERY, args.warmup, args.seconds)
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
            if server.poll() is None:
                server.kill()
        same = True
        for variant in variants:
            host = ServeHost(
                serve_args(store, model, args.ingress_replicas),
                PROXY_VARIANTS[variant],
                database_url=f"sqlite:///{workdir}/db",
            )
            started = time.perf_counter()
            with host:
                ready = time.perf_counter() - started
                answer = _answer(host.url + QUERY)
                same &= answer == reference
                print(
                    f"serve {variant} ({args.ingress_replicas} ingress replicas; ready in "
                    f"{ready:.0f} s; answer equal to the baseline's: {answer == reference})",
                    flush=True,
                )
                results[variant] = _measure(host.url + QUERY, args.warmup, args.seconds)
        return _report(results, variants, same, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _report(
    results: dict[str, dict[int, LoadResult]],
    variants: list[str],
    same: bool,
    args: argparse.Namespace,
) -> int:
    base = results["baseline"]
    print()
    print(f"{'side':<20} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    for side, by_c in results.items():
        for c, r in by_c.items():
            ratio = r.rps / base[c].rps if base[c].rps else 0.0
            print(
                f"{side:<20} {c:>3} {r.rps:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {ratio:>6.2f}"
            )
    fastest = max(variants, key=lambda v: (results[v][16].rps + results[v][64].rps) / 2)
    best = results[fastest]
    ratios = {c: best[c].rps / base[c].rps for c in (16, 64)}
    errors = sum(r.non_2xx + r.socket_errors for by_c in results.values() for r in by_c.values())
    ok = (
        all(v >= BAR_RATIO for v in ratios.values())
        and best[1].p50_ms < BAR_P50_MS
        and errors == 0
        and same
    )
    print(
        f"fastest variant: {fastest}; ratio c=16 {ratios[16]:.2f}, c=64 {ratios[64]:.2f} "
        f"(bar >= {BAR_RATIO}); p50 c=1 {best[1].p50_ms:.2f} ms (bar < {BAR_P50_MS} ms); "
        f"errors {errors}; answers equal {same}: {'PASS' if ok else 'FAIL'}"
    )
    save_results("serve-points", args, results, fastest=fastest, **{"pass": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
