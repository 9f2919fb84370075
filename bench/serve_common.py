"""Shared pieces of the serve benches: the application in a process of its own, and the load.

:class:`ServeHost` runs the real application (``serve.app:build_app``) in a child interpreter
with a Ray of its own (``ray.init`` in a fresh temp dir, no dashboard), started with the
environment the parent gives it, so Serve's proxy switches (``RAY_SERVE_ENABLE_HA_PROXY``,
``RAY_SERVE_THROUGHPUT_OPTIMIZED``), read once when Serve's modules are imported, apply to the
controller, the proxy and every replica. The child answers ``status`` on its stdin with the
replicas of each deployment; :meth:`ServeHost.stop` shuts Serve and Ray down and then kills
whatever of that Ray is left, by pid: every process ever seen below the child, and any process
whose command line names the host's temp dir (HAProxy's config lives there: HAProxy can
outlive its Ray and keep the port bound otherwise). Other Rays on the machine are left alone.

:func:`run_load` drives one URL at a fixed concurrency for a fixed time with ``wrk`` (a Lua
script reports the count, errors and latency percentiles as JSON) or, where ``wrk`` is not
installed, with an aiohttp client in a child interpreter (``python -m bench.serve_common load``).
Only 127.0.0.1 is ever addressed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from tests.helpers.ray_head import end_processes

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "climate"

PROXY_VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "haproxy+throughput": {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    },
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_auth_off(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with API keys explicitly not required, where ServeArgs has an ``auth`` section."""
    from schemas.serve_config import ServeArgs

    field = ServeArgs.model_fields.get("auth")
    annotation = getattr(field, "annotation", None)
    if field is None or "required" not in getattr(annotation, "model_fields", {}):
        return args
    return {**args, "auth": {**args.get("auth", {}), "required": False}}


def wait_http(url: str, timeout: float) -> dict[str, Any]:
    """Poll ``url`` until it answers 200; its JSON body. TimeoutError with the last answer."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body: dict[str, Any] = json.load(reply)
                return body
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s: {last}")


# -- the application in a child interpreter ----------------------------------------------------


class ServeHost:
    """The application on a Ray of its own, in a child interpreter (see the module docstring).

    Parameters
    ----------
    args
        ServeArgs of the application, as a dict (auth switched off by the caller if wanted).
    env
        Extra environment of the child, hence of its Ray (proxy switches).
    num_cpus
        Logical CPUs of the child's Ray.
    database_url, registry_url
        What ``build_app`` reads from the environment.
    """

    def __init__(
        self,
        args: dict[str, Any],
        env: dict[str, str] | None = None,
        num_cpus: int = 2,
        database_url: str | None = None,
        registry_url: str | None = None,
    ) -> None:
        self.args = args
        self.env = env or {}
        self.num_cpus = num_cpus
        self.database_url = database_url
        self.registry_url = registry_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.temp_dir = ""
        self.proc: subprocess.Popen[str] | None = None
        self._seen: dict[int, psutil.Process] = {}
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._log: Any = None

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # HAProxy variants keep a stopping ingress replica 30 s for load balancers: teardown
        # time only, shortened here.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["RAY_AUTH_MODE"] = "disabled"
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.registry_url:
            env["MODEL_REGISTRY_URL"] = self.registry_url
        haproxy = f"{self.temp_dir}/haproxy"
        env.update(
            {
                "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{haproxy}/haproxy.cfg",
                "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{haproxy}/admin.sock",
                "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": haproxy,
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{haproxy}/server-state",
                "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{haproxy}/metrics.sock",
                "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            }
        )
        return env

    def start(self, timeout: float = 240.0) -> ServeHost:
        """Start the child, deploy the application and wait until ``/ready`` answers 200."""
        # Short: Ray's socket paths below it must stay under the 107-byte limit.
        self.temp_dir = tempfile.mkdtemp(prefix="srvh-", dir="/tmp")
        spec = {
            "args": self.args,
            "port": self.port,
            "num_cpus": self.num_cpus,
            "temp_dir": f"{self.temp_dir}/ray",
        }
        spec_path = Path(self.temp_dir) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        self._log = open(Path(self.temp_dir) / "host.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.serve_common", "host", str(spec_path)],
            cwd=ROOT,
            env=self._child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.5):
            self._remember()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"the Serve host did not become ready:\n{tail}")
        self._remember()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)
            if line.startswith('{"event": "ready"'):
                self._ready.set()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the child's stderr."""
        path = Path(self.temp_dir) / "host.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def status(self, timeout: float = 30.0) -> dict[str, Any]:
        """``{deployment: {"status": ..., "replicas": [{"state", "pid", "replica_id"}]}}``."""
        assert self.proc is not None and self.proc.stdin is not None
        with self._lock:
            seen = len(self._lines)
        self.proc.stdin.write("status\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                new = [line for line in self._lines[seen:] if line.startswith('{"event": "status"')]
            if new:
                self._remember()
                found: dict[str, Any] = json.loads(new[0])["deployments"]
                return found
            time.sleep(0.05)
        raise TimeoutError(f"no status from the Serve host:\n{self.log_tail()}")

    def _remember(self) -> None:
        """Note every process below the child now (they may be re-parented later)."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.proc.pid)
            for proc in [root, *root.children(recursive=True)]:
                self._seen.setdefault(proc.pid, proc)

    def processes(self) -> list[psutil.Process]:
        """The child and every process of its Ray (and HAProxy) alive now."""
        self._remember()
        found = {pid: p for pid, p in self._seen.items() if p.is_running()}
        if self.temp_dir:
            for proc in psutil.process_iter(["cmdline"]):
                if any(self.temp_dir in part for part in proc.info.get("cmdline") or []):
                    found.setdefault(proc.pid, proc)
        for proc in list(found.values()):
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update({c.pid: c for c in proc.children(recursive=True)})
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self) -> None:
        """Shut Serve and Ray down (``quit``), then kill what is left of them, by pid."""
        if self.proc is not None and self.proc.poll() is None:
            self._remember()
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        end_processes(self.processes())
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> ServeHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _details() -> dict[str, Any]:
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    app = details.get("applications", {}).get(APP_NAME, {})
    found: dict[str, Any] = {}
    for name, deployment in app.get("deployments", {}).items():
        found[name] = {
            "status": deployment.get("status"),
            "replicas": [
                {"state": r.get("state"), "pid": r.get("pid"), "replica_id": r.get("replica_id")}
                for r in deployment.get("replicas", [])
            ],
        }
    return found


def _host(spec_path: str) -> int:
    """The child: Ray, Serve, the application; then ``status`` / ``quit`` on stdin."""
    import logging

    import ray
    from ray import serve

    from serve.app import build_app

    spec = json.loads(Path(spec_path).read_text())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ray.init(
        num_cpus=spec["num_cpus"],
        include_dashboard=False,
        _temp_dir=spec["temp_dir"],
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": spec["port"]})
        serve.run(build_app(spec["args"]), name=APP_NAME, route_prefix="/")
        url = f"http://127.0.0.1:{spec['port']}"
        wait_http(f"{url}/ready", 180)
        print(json.dumps({"event": "ready", "url": url}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "status":
                print(json.dumps({"event": "status", "deployments": _details()}), flush=True)
            elif command == "quit":
                break
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
    return 0


# -- load --------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One load run: answers, errors and latency (ms)."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_SCRIPT = """
local body_file = os.getenv("BENCH_BODY_FILE")
wrk.method = os.getenv("BENCH_METHOD") or "GET"
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def load_tool() -> str:
    """``wrk`` where it is installed, else the aiohttp client."""
    return "wrk" if shutil.which("wrk") else "aiohttp"


def run_load(
    url: str,
    concurrency: int,
    seconds: float,
    method: str = "GET",
    body_file: Path | None = None,
    content_type: str | None = None,
    timeout_s: float = 60.0,
) -> LoadResult:
    """Drive ``url`` with ``concurrency`` connections for ``seconds`` from a separate process."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benches only address 127.0.0.1, not {url}")
    env = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_BODY_FILE": str(body_file or ""),
        "BENCH_CONTENT_TYPE": content_type or "",
    }
    if load_tool() == "wrk":
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT)
        try:
            command = [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={int(timeout_s)}s",
                "-s",
                script.name,
                url,
            ]
            done = subprocess.run(
                command, check=False, env=env, capture_output=True, text=True, timeout=seconds + 120
            )
        finally:
            os.unlink(script.name)
        line = next((x for x in done.stdout.splitlines() if x.startswith('{"requests"')), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        raw = json.loads(line)
        return LoadResult(
            requests=raw["requests"],
            seconds=raw["duration_us"] / 1e6,
            non_2xx=raw["non_2xx"],
            socket_errors=raw["socket_errors"],
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            mean_ms=raw["mean_us"] / 1000,
            tool="wrk",
        )
    command = [
        sys.executable,
        "-m",
        "bench.serve_common",
        "load",
        url,
        str(concurrency),
        str(seconds),
        str(timeout_s),
    ]
    done = subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load client failed: {done.stderr[-3000:]}")
    return LoadResult(**json.loads(done.stdout.splitlines()[-1]))


async def _client(url: str, concurrency: int, seconds: float, timeout_s: float) -> LoadResult:
    import aiohttp
    import numpy as np

    method = os.environ.get("BENCH_METHOD", "GET")
    body_file = os.environ.get("BENCH_BODY_FILE")
    body = Path(body_file).read_bytes() if body_file else None
    headers = {"Content-Type": os.environ["BENCH_CONTENT_TYPE"]} if body else {}
    latencies: list[float] = []
    counts = {"non_2xx": 0, "socket_errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        stop = started + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                try:
                    async with session.request(method, url, data=body, headers=headers) as reply:
                        await reply.read()
                        if not 200 <= reply.status < 300:
                            counts["non_2xx"] += 1
                except (aiohttp.ClientError, TimeoutError):
                    counts["socket_errors"] += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies or [0.0]) * 1000
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        non_2xx=counts["non_2xx"],
        socket_errors=counts["socket_errors"],
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        tool="aiohttp",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_common")
    sub = parser.add_subparsers(dest="command", required=True)
    host = sub.add_parser("host", help="(internal) the child of ServeHost")
    host.add_argument("spec")
    load = sub.add_parser("load", help="(internal) the aiohttp load client")
    load.add_argument("url")
    load.add_argument("concurrency", type=int)
    load.add_argument("seconds", type=float)
    load.add_argument("timeout", type=float)
    args = parser.parse_args(argv)
    if args.command == "host":
        return _host(args.spec)
    result = asyncio.run(_client(args.url, args.concurrency, args.seconds, args.timeout))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def save_results(name: str, args: object, results: dict[str, dict[Any, Any]], **extra: Any) -> Path:
    """Write a bench's load results (one ``LoadResult`` per side and key) to bench/results/."""
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{name}-{stamp}.json"
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "results": {
            side: {key: {**asdict(r), "rps": r.rps} for key, r in by_key.items()}
            for side, by_key in results.items()
        },
        **extra,
    }
    path.write_text(json.dumps(payload, indent=1))
    return path
