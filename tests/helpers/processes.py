"""Running the project's entrypoints as a user does: ``python -m jobs.X`` in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[2]


def job_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment joined to the suite's Ray, with ``overrides`` (None unsets)."""
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_module(
    args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` to completion, its output captured as text."""
    command = [sys.executable, "-m", *args]
    output = {"capture_output": True, "text": True}
    return subprocess.run(command, check=False, cwd=cwd, env=env, timeout=timeout, **output)


def start_module(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """``python -m ARGS`` in its own process group (to be killed whole), output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
