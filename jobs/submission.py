"""``climate submit`` and ``climate jobs``: the pipeline's jobs on a Ray cluster, through the Ray
Job Submission API (the dashboard's HTTP address, ``http://HEAD:8265``).

``climate submit KIND --config FILE`` validates the config here, then submits
``python -m jobs.<module> --config FILE [--set ...]`` with this directory (the project root) as
the job's ``working_dir``. Submission ids name the work and its attempt:
``<kind>-<config stem>-<10 hex of sha256 of the resolved config and overrides>-<attempt>``; the
same work is refused while an attempt is pending, running or has succeeded, and a failed or
stopped one is retried under the next attempt number.

The entrypoint's own CPUs and GPUs follow :func:`entrypoint_resources` (``--cpus``/``--gpus``
override it). The job runs in Ray's copy of the project, so relative local paths in its config
(``output/...``) and in a relative SQLite DATABASE_URL land in that copy, which Ray deletes
later: give jobs absolute paths on a shared filesystem, ``s3://`` URLs and a database server.
Settings (DATABASE_URL, ...) are the cluster's environment; ``--pass-env`` sends this shell's
instead, in the job's runtime env, where anyone with access to the job API can read them.

Exit status: 0 done (with ``--wait``: the job succeeded), 1 refused (the same work is already
pending, running or succeeded) or the job failed or was stopped, 2 bad input (unknown kind,
unreadable or invalid config, unknown job, unreachable cluster). Every error names its fix.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs.cluster import Cluster
from jobs.common import EXIT_OK, EXIT_REFUSED, console, typer_exit_codes
from jobs.work import (
    DEFAULT_ADDRESS,
    WorkExistsError,
    check_project_root,
    load_work,
    runtime_env,
)

if TYPE_CHECKING:  # imported when a command runs: `climate --help` stays fast
    from ray.job_submission import JobDetails

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Ray Jobs on a cluster: list, status, logs, stop (submit with `climate submit`).",
)
out = Console(soft_wrap=True)

IdArg = Annotated[str, typer.Argument(help="submission id, as `climate jobs list` shows it")]
AddressOption = Annotated[
    str | None,
    typer.Option("--address", help=f"Ray job API; default: RAY_ADDRESS, else {DEFAULT_ADDRESS}"),
]


# --- commands ----------------------------------------------------------------------------------


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _ended(cluster: Cluster, job_id: str) -> int:
    """Print how the job ended; 0 when it succeeded, 1 otherwise."""
    info = cluster.info(job_id)
    status = str(info.status)
    colour = "green" if status == "SUCCEEDED" else "red"
    message = f": {info.message}" if info.message else ""
    console.print(
        f"[{colour}]{job_id} {status}[/{colour}]{escape(message)}", highlight=False, soft_wrap=True
    )
    return EXIT_OK if status == "SUCCEEDED" else EXIT_REFUSED


def submit(
    kind: str,
    config_path: str,
    overrides: list[str],
    address: str | None = None,
    wait: bool = False,
    cpus: float | None = None,
    gpus: float | None = None,
    pass_env: bool = False,
) -> int:
    """Submit one job of ``kind`` to a Ray cluster; returns the exit status.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    config_path
        The job's YAML config, validated here with the job's own config model.
    overrides
        Dotted ``KEY=VALUE`` overrides, applied here and passed to the job.
    address
        The cluster's job API; default RAY_ADDRESS, else http://127.0.0.1:8265.
    wait
        Follow the job's logs until it ends; the exit status is then the job's.
    cpus, gpus
        Reserve these for the entrypoint instead of what the config implies.
    pass_env
        Send DATABASE_URL, MODEL_REGISTRY_URL, S3_ENDPOINT_URL and REDIS_URL (when set) in
        the job's runtime env.

    Returns
    -------
    int
        0 submitted (with ``wait``: succeeded), 1 refused or the job failed or was stopped,
        2 bad input or an unreachable cluster.
    """
    root = Path.cwd()
    try:
        with typer_exit_codes(WorkExistsError):
            check_project_root(root)
            work = load_work(kind, config_path, overrides, root, cpus, gpus)
            cluster = Cluster.connect(address)
            env = runtime_env(root, os.environ, pass_env)
            job_id = cluster.submit(work, env)
            out.print(job_id, highlight=False, soft_wrap=True)
            passed = ", ".join(env.get("env_vars", {})) or "none"
            console.print(
                f"submitted {job_id} to {cluster.url}: {escape(work.entrypoint)} "
                f"(entrypoint CPUs {work.resources.cpus:g}, GPUs {work.resources.gpus:g}: "
                f"{work.resources.reason}; env passed: {passed})",
                highlight=False,
                soft_wrap=True,
            )
            follow = f"climate jobs logs {job_id} --follow --address {cluster.url}"
            if not wait:
                console.print(f"follow it: {follow}", highlight=False, soft_wrap=True)
                return EXIT_OK
            try:
                cluster.follow(job_id, _write)
                cluster.wait(job_id)
            except KeyboardInterrupt:
                console.print(
                    f"\nstopped following; {job_id} goes on: {follow}, or stop it: "
                    f"climate jobs stop {job_id} --address {cluster.url}",
                    highlight=False,
                    soft_wrap=True,
                )
                return 130
            return _ended(cluster, job_id)
    except typer.Exit as exc:
        return int(exc.exit_code)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def jobs_table(jobs: list[JobDetails], url: str) -> Table:
    """Submission id, status, kind, config, start and end times (UTC), oldest first."""
    table = Table(title=f"jobs on {url}")
    ids = [job.submission_id or job.job_id or "" for job in jobs]
    # the id is what the other commands take: never shortened, whatever the terminal's width
    table.add_column("submission id", no_wrap=True, min_width=max(map(len, ids), default=13))
    table.add_column("status", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for column in ("config", "start (UTC)", "end (UTC)"):
        table.add_column(column, overflow="fold")
    for job in sorted(jobs, key=lambda j: j.start_time or 0):
        meta = job.metadata or {}
        table.add_row(
            job.submission_id or job.job_id or "",
            str(job.status),
            meta.get("kind", ""),
            meta.get("config", ""),
            _when(job.start_time),
            _when(job.end_time),
        )
    return table


@app.command("list")
def list_command(address: AddressOption = None) -> None:
    """Every job of the cluster: submission id, status, kind, config, start and end."""
    with typer_exit_codes(WorkExistsError):
        cluster = Cluster.connect(address)
        out.print(jobs_table(cluster.jobs(), cluster.url))


@app.command("status")
def status_command(submission_id: IdArg, address: AddressOption = None) -> None:
    """One job's status, what it runs and when (exit 0 whatever the status)."""
    with typer_exit_codes(WorkExistsError):
        cluster = Cluster.connect(address)
        job = cluster.info(submission_id)
        meta = job.metadata or {}
        table = Table(title=submission_id, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        rows = [
            ("status", str(job.status)),
            ("message", job.message or ""),
            ("kind", meta.get("kind", "")),
            ("config", meta.get("config", "")),
            ("config sha256", meta.get("config_sha256", "")),
            ("overrides", meta.get("overrides", "")),
            ("entrypoint", job.entrypoint),
            ("start (UTC)", _when(job.start_time)),
            ("end (UTC)", _when(job.end_time)),
            ("driver exit code", "" if job.driver_exit_code is None else str(job.driver_exit_code)),
        ]
        for key, value in rows:
            table.add_row(key, escape(value))
        out.print(table)


@app.command("logs")
def logs_command(
    submission_id: IdArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="until the job ends")] = False,
    address: AddressOption = None,
) -> None:
    """A job's output (stdout and stderr of its entrypoint)."""
    with typer_exit_codes(WorkExistsError):
        cluster = Cluster.connect(address)
        if follow:
            cluster.follow(submission_id, _write)
        else:
            _write(cluster.logs(submission_id))


@app.command("stop")
def stop_command(submission_id: IdArg, address: AddressOption = None) -> None:
    """Stop a pending or running job (it ends STOPPED; a retry is the next attempt)."""
    with typer_exit_codes(WorkExistsError):
        cluster = Cluster.connect(address)
        cluster.info(submission_id)
        stopped = cluster.stop(submission_id)
        verb = "stopping" if stopped else "not running, nothing to stop:"
        console.print(f"{verb} {submission_id} ({cluster.status(submission_id)})")
