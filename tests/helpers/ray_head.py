"""A Ray head of its own for tests and benches: ``ray start --head`` on free ports in a temp
directory, with the job API up, killed whole at the end (other local Rays are left alone)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "era5-2mt-2019-03-uk.grib"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_processes(procs: list[psutil.Process], grace_s: float = 5) -> None:
    """SIGTERM these processes, then SIGKILL those still alive after ``grace_s``."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)


class LocalHead:
    """A Ray head started with ``ray start --head`` on free ports and its own temp dir, so that
    it shares nothing with another Ray on the machine, and stopped by killing exactly the
    processes whose command line names that temp dir (and their children).

    ``python`` on the head's PATH is this interpreter's, so jobs run in this environment.
    """

    def __init__(self, num_cpus: int = 1) -> None:
        self.num_cpus = num_cpus
        self.temp_dir = ""
        self.dashboard_port = 0
        self.gcs_port = 0

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def start(self, timeout_s: float = 120) -> LocalHead:
        """Start the head and wait until its job API answers."""
        # Short: Ray's socket paths under it must stay below the 107-byte limit.
        self.temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        bin_dir = Path(sys.executable).parent
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Ray turns token authentication on where ~/.ray/auth_token exists (any earlier local
        # ray.init writes one); this head is local and short-lived, and its clients send none.
        env["RAY_AUTH_MODE"] = "disabled"
        command = [
            str(bin_dir / "ray"),
            "start",
            "--head",
            f"--port={self.gcs_port}",
            "--node-ip-address=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed ({done.returncode}):\n{done.stderr[-3000:]}")
        deadline = time.monotonic() + timeout_s
        while not self._jobs_api_up():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"no job API at {self.dashboard_url} after {timeout_s:.0f} s")
            time.sleep(0.25)
        return self

    def _jobs_api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/api/jobs/", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def processes(self) -> list[psutil.Process]:
        """The head's processes (command line names the temp dir) and all their children."""
        if not self.temp_dir:
            return []
        names_dir = re.compile(re.escape(self.temp_dir) + r"(/|\s|$)")
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if names_dir.search(cmdline) and proc.pid != os.getpid():
                found[proc.pid] = proc
        for proc in list(found.values()):
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update({child.pid: child for child in proc.children(recursive=True)})
        return list(found.values())

    def stop(self) -> None:
        """Kill the head's processes (TERM, then KILL after 5 s) and remove its temp dir."""
        end_processes(self.processes())
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
