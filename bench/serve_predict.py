"""``python -m bench.serve_predict``: ``POST /v1/predict`` with dynamic batching on vs off.

Each request posts a binary ``.npy`` body: the model's initial fields, float32 [history 2,
channels 1, 181, 360] (521 kB), with ``init_time=2020-01-02T06:00Z`` and
``lead_hours=1,2,...,24`` in the query, and gets the 24 fields back as ``.npy`` (6.3 MB). The
model is a seeded test model on that grid from :mod:`tests.helpers.models`: ``cnn``
(:func:`make_cnn_model`, 3 convolutions of width 16: compute-bound like a real model) and/or
``linear`` (:func:`make_linear_model`: nearly free, so the serving overhead dominates).

Both sides are ``serve.app:build_app`` on a Ray of its own in a child process
(:class:`bench.serve_common.ServeHost`, the proxy variant ``--proxy``), one ingress replica and
one predictor replica (1 ONNX Runtime thread), the predictor's ``max_ongoing_requests`` 32:

- **batching on**: ``predictor.batching`` ``max_batch_size`` 8, ``batch_wait_timeout_s`` 0.01
  (the shipped configuration): the ingress gathers concurrent requests into one predictor call,
  the predictor merges the calls that queued while it worked and stacks those of the same lead
  times into one ``rollout`` call;
- **batching off** (the baseline): the same deployment with ``max_batch_size`` 1: each request
  is its own predictor call and rollout.

Load: concurrency 32 (``wrk``, or an aiohttp client without it), ``--warmup`` s unmeasured then
``--seconds`` s measured; requests to 127.0.0.1 only. Before the load, one answer of each side
is checked against ONNX Runtime run directly on the same fields (``ModelRuntime.rollout``).

Beside the load, the model alone: ``ModelRuntime.rollout`` (1 thread) timed per request at
batch 1 and at batch 8 on the same fields, and the share of an unbatched request's time that the
model takes. Batching can save only that share, and only as far as the model runs faster per
sample in a batch: ``1 / (1 - share + share / speedup)`` is what the served ratio could reach
if nothing but the model's own time shrank.

Bar: batching on / off >= 1.5 in requests per second (for every model measured). Exit 0 when
it holds, 1 otherwise. Results also go to ``bench/results/serve-predict-*.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.serve_common import (
    PROXY_VARIANTS,
    LoadResult,
    ServeHost,
    load_tool,
    run_load,
    save_results,
    with_auth_off,
)
from pipelines.models.runtime import ModelRuntime
from schemas.model_card import ModelCard
from tests.helpers.forecast_runs import global_axes, write_run
from tests.helpers.models import make_cnn_model, make_linear_model

NPY = "application/x-npy"
INIT = "2020-01-02T06:00Z"
LEADS = tuple(range(1, 25))
CONCURRENCY = 32
BAR = 1.5


def serve_args(store: Path, model: Path, max_batch_size: int) -> dict[str, Any]:
    """One ingress and one predictor replica; only the batch size differs between the sides."""
    fixed = {"min_replicas": 1, "max_replicas": 1}
    return with_auth_off(
        {
            "forecast_store": str(store),
            "model": {"kind": "file", "path": str(model)},
            "device": "cpu",
            "threads": 1,
            "refresh_seconds": 30,
            "limits": {"max_body_bytes": 16 * 2**20},
            "ingress": {"num_cpus": 0.5, "autoscaling": fixed, "max_ongoing_requests": 64},
            "predictor": {
                "num_cpus": 1,
                "autoscaling": fixed,
                "max_ongoing_requests": CONCURRENCY,
                "batching": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": 0.01},
            },
        }
    )


def _check(url: str, body: bytes, expected: np.ndarray) -> bool:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", NPY)
    with urllib.request.urlopen(request, timeout=120) as reply:
        got = np.load(io.BytesIO(reply.read()), allow_pickle=False)
    return bool(got.shape == expected.shape and np.allclose(got, expected, rtol=1e-5, atol=1e-3))


def _make_model(kind: str, path: Path, lat: np.ndarray, lon: np.ndarray) -> ModelCard:
    if kind == "cnn":
        return make_cnn_model(path, lat, lon)
    return make_linear_model(path, lat, lon)


def rollout_seconds(runtime: ModelRuntime, fields: np.ndarray, batch: int) -> float:
    """Median seconds per request of one ``rollout`` of ``batch`` stacked requests (3 timed)."""
    history = np.repeat(fields[None], batch, axis=0)
    hours = np.full(batch, 6)
    runtime.rollout(history, hours, LEADS[-1], LEADS)  # warm
    times = []
    for _ in range(3):
        start = time.perf_counter()
        runtime.rollout(history, hours, LEADS[-1], LEADS)
        times.append((time.perf_counter() - start) / batch)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_predict", description=__doc__)
    parser.add_argument("--models", default="cnn,linear", help="comma list of cnn, linear")
    parser.add_argument("--proxy", default="haproxy+throughput", choices=list(PROXY_VARIANTS))
    parser.add_argument("--seconds", type=float, default=12.0, help="measured, per side")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured, per side")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    if not kinds or set(kinds) - {"cnn", "linear"}:
        parser.error("--models takes cnn and/or linear")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-predict-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lat, lon = global_axes(181, 360)
    query = f"/v1/predict?init_time={INIT}&lead_hours={','.join(map(str, LEADS))}"
    fields = np.random.default_rng(0).normal(288.0, 5.0, (2, 1, 181, 360)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, fields)
    body_file = workdir / "fields.npy"
    body_file.write_bytes(buffer.getvalue())
    print(
        f"181x360, 24 leads, body {body_file.stat().st_size / 1e3:.0f} kB, response "
        f"{24 * 181 * 360 * 4 / 1e6:.1f} MB; concurrency {CONCURRENCY}; proxy {args.proxy}; "
        f"load tool {load_tool()}; {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.2f}; {args.warmup:.0f} s warm-up + {args.seconds:.0f} s",
        flush=True,
    )
    results: dict[str, dict[str, LoadResult]] = {}
    alone: dict[str, dict[int, float]] = {}
    correct = True
    try:
        for kind in kinds:
            model = workdir / f"{kind}.onnx"
            card = _make_model(kind, model, lat, lon)
            store = workdir / f"{kind}.zarr"
            write_run(str(store), card, leads=24)
            runtime = ModelRuntime.load(model, card, "cpu", threads=1)
            expected = runtime.rollout(fields[None], np.array([6]), LEADS[-1], LEADS)[0]
            alone[kind] = {b: rollout_seconds(runtime, fields, b) for b in (1, 8)}
            print(
                f"{kind} model alone: {alone[kind][1] * 1e3:.1f} ms per request at batch 1, "
                f"{alone[kind][8] * 1e3:.1f} at batch 8 ({alone[kind][1] / alone[kind][8]:.2f}x)",
                flush=True,
            )
            results[kind] = {}
            for side, batch in (("off", 1), ("on", 8)):
                host = ServeHost(
                    serve_args(store, model, batch),
                    PROXY_VARIANTS[args.proxy],
                    database_url=f"sqlite:///{workdir}/db",
                )
                with host:
                    url = host.url + query
                    ok = _check(url, body_file.read_bytes(), expected)
                    correct &= ok
                    run_load(url, CONCURRENCY, args.warmup, "POST", body_file, NPY)
                    r = run_load(url, CONCURRENCY, args.seconds, "POST", body_file, NPY)
                results[kind][side] = r
                print(
                    f"{kind} batching {side:>3} (max_batch_size {batch}): {r.rps:6.2f} req/s  "
                    f"p50 {r.p50_ms:8.1f} ms  p99 {r.p99_ms:8.1f} ms  non-2xx {r.non_2xx}  "
                    f"socket errors {r.socket_errors}; answer equals ONNX Runtime's: {ok}",
                    flush=True,
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    passed = correct
    for kind, sides in results.items():
        ratio = sides["on"].rps / sides["off"].rps if sides["off"].rps else 0.0
        errors = sum(r.non_2xx + r.socket_errors for r in sides.values())
        ok = ratio >= BAR and errors == 0
        passed &= ok
        share = min(1.0, alone[kind][1] * sides["off"].rps)
        speedup = alone[kind][1] / alone[kind][8]
        print(
            f"{kind}: batching on {sides['on'].rps:.2f} req/s vs off {sides['off'].rps:.2f} "
            f"req/s: ratio {ratio:.2f} (bar >= {BAR}); errors {errors}: "
            f"{'PASS' if ok else 'FAIL'}\n  the model alone takes {share:.0%} of the time "
            f"between unbatched answers and runs {speedup:.2f}x faster per request at batch 8: "
            f"if only the model's time shrank, the ratio could reach "
            f"{1 / (1 - share + share / speedup):.2f}"
        )
    model_alone = {k: {str(b): t for b, t in v.items()} for k, v in alone.items()}
    save_results("serve-predict", args, results, model_alone_s=model_alone, **{"pass": passed})
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
