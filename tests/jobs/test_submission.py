"""``climate submit`` and ``climate jobs`` against a real Ray head of their own, over HTTP.

The head (``bench.job_submission.LocalHead``) has its own ports and temp dir, so the suite's
in-process Ray is never touched; RAY_ADDRESS is unset in every test, every command names the
head with ``--address``.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr
import yaml
from click.testing import Result
from typer.testing import CliRunner

from jobs.cli import app
from jobs.cluster import Cluster
from jobs.work import (
    EXCLUDES,
    WorkExistsError,
    attempt_of,
    config_argument,
    load_work,
    next_attempt,
    runtime_env,
    submission_id,
    work_digest,
    work_prefix,
)
from tests.helpers.ray_head import LocalHead, free_port

ROOT = Path(__file__).resolve().parents[2]
ID = r"[a-z]+-[A-Za-z0-9_.-]+-[0-9a-f]{10}-\d+"


@pytest.fixture(autouse=True)
def project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run from the project root, with no cluster address in the environment."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)


def climate(*args: str) -> Result:
    """``climate ARGS`` in this process, on a terminal wide enough for whole table rows."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def submitted_id(result: Result) -> str:
    ids = re.findall(rf"^{ID}$", result.stdout, flags=re.MULTILINE)
    assert len(ids) == 1, result.output
    return ids[0]


def ingest_config(path: Path, urls: list[str], store: Path) -> Path:
    source = {"kind": "grib", "urls": urls, "variables": ["t2m"]}
    path.write_text(yaml.safe_dump({"source": source, "store": {"url": str(store)}}))
    return path


# --- pure helpers --------------------------------------------------------------------------------


def test_submission_ids_name_the_work_and_its_attempt() -> None:
    prefix = work_prefix("predict", "configs/forecast.yaml", "3fa9c01b2d" + "0" * 54)
    assert prefix == "predict-forecast-3fa9c01b2d"
    assert submission_id(prefix, 1) == "predict-forecast-3fa9c01b2d-1"
    assert work_prefix("ingest", "/x/my config!.yaml", "ab" * 32).startswith("ingest-my-config-")
    assert attempt_of(prefix, "predict-forecast-3fa9c01b2d-12") == 12
    assert attempt_of(prefix, "predict-forecast-3fa9c01b2d-x") is None
    assert attempt_of(prefix, "predict-forecast-3fa9c01b2dd-1") is None
    assert attempt_of(prefix, None) is None


def test_the_digest_follows_the_resolved_config_and_the_overrides() -> None:
    a = work_digest({"a": 1, "b": {"c": 2}}, [])
    assert a == work_digest({"b": {"c": 2}, "a": 1}, [])
    assert a != work_digest({"a": 1, "b": {"c": 3}}, [])
    assert a != work_digest({"a": 1, "b": {"c": 2}}, ["b.c=2"])


def test_next_attempt_counts_past_failures_and_refuses_live_or_done_work() -> None:
    prefix = "ingest-ingest-0123456789"
    others = {"ingest-ingest-9999999999-1": "RUNNING", "raysubmit_x": "SUCCEEDED"}
    assert next_attempt(prefix, others) == 1
    failed = {f"{prefix}-1": "FAILED", f"{prefix}-2": "STOPPED", **others}
    assert next_attempt(prefix, failed) == 3
    for status in ("PENDING", "RUNNING", "SUCCEEDED"):
        with pytest.raises(WorkExistsError, match=f"{prefix}-3 \\({status}\\)"):
            next_attempt(prefix, {**failed, f"{prefix}-3": status})


def test_resources_come_from_the_config_or_the_flags() -> None:
    def reserved(kind: str, config: str, *overrides: str) -> tuple[float, float]:
        work = load_work(kind, f"configs/{config}.yaml", list(overrides), ROOT)
        return work.resources.cpus, work.resources.gpus

    assert reserved("ingest", "ingest") == (0, 0)
    assert reserved("predict", "forecast", "device=cuda") == (0, 0)  # the actors hold the GPUs
    assert reserved("train", "train", "schedule.threads=3") == (3, 0)
    assert reserved("train", "train", "schedule.device=cuda") == (1, 1)
    assert reserved("evaluate", "evaluate", "device=cuda", "threads=2") == (2, 1)
    flags = load_work("ingest", "configs/ingest.yaml", [], ROOT, cpus=2, gpus=0.5).resources
    assert (flags.cpus, flags.gpus, flags.reason) == (2, 0.5, "--cpus/--gpus")


def test_runtime_env_uploads_the_project_and_passes_settings_only_when_asked() -> None:
    environ = {"DATABASE_URL": "sqlite:///x.db", "AWS_SECRET_ACCESS_KEY": "s", "REDIS_URL": ""}
    env = runtime_env(ROOT, environ, pass_env=False)
    assert env["working_dir"] == str(ROOT) and "env_vars" not in env
    assert {"output/", ".venv/", ".git/", "__pycache__", "bench/results/"} <= set(EXCLUDES)
    assert runtime_env(ROOT, environ, pass_env=True)["env_vars"] == {
        "DATABASE_URL": "sqlite:///x.db"
    }


def test_the_config_travels_in_the_working_dir_when_it_is_inside(tmp_path: Path) -> None:
    assert config_argument(ROOT / "configs" / "ingest.yaml", ROOT) == ("configs/ingest.yaml", True)
    outside = tmp_path / "x.yaml"
    assert config_argument(outside, ROOT) == (str(outside.resolve()), False)
    assert config_argument(ROOT / "output" / "x.yaml", ROOT)[1] is False


# --- bad input: exit 2, no traceback -----------------------------------------------------------


def test_unknown_kind_unreadable_and_invalid_configs_exit_two(tmp_path: Path) -> None:
    result = climate("submit", "forecast", "--config", "configs/forecast.yaml")
    assert result.exit_code == 2 and "ingest, train, predict, evaluate, nightly" in result.output
    result = climate("submit", "ingest", "--config", str(tmp_path / "none.yaml"))
    assert result.exit_code == 2 and "cannot read the configuration file" in result.output
    config = ingest_config(tmp_path / "i.yaml", ["x.grib"], tmp_path / "a.zarr")
    result = climate("submit", "ingest", "-c", str(config), "--set", "store.chunks.time=zero")
    assert result.exit_code == 2 and "store.chunks.time = 'zero'" in result.output


def test_submitting_from_outside_the_project_exits_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # it would be uploaded as the working_dir
    result = climate("submit", "ingest", "-c", str(ROOT / "configs" / "ingest.yaml"))
    assert result.exit_code == 2 and "run `climate submit` from the project" in result.output


def test_an_unreachable_address_exits_two_naming_it_and_the_fix() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    for args in (["submit", "ingest", "-c", "configs/ingest.yaml"], ["jobs", "list"]):
        result = climate(*args, "--address", address)
        assert result.exit_code == 2, result.output
        assert address in result.output and "ray start --head" in result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


# --- a real head -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    with LocalHead(num_cpus=1) as local:
        yield local.dashboard_url


@dataclass(frozen=True)
class Ingested:
    job_id: str
    config: Path
    store: Path
    database: Path


@pytest.fixture(scope="module")
def ingested(head: str, tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """The bundled sample ingested by a job, DATABASE_URL sent with --pass-env."""
    tmp = tmp_path_factory.mktemp("ingest-job")
    sample = ROOT / "data" / "sample" / "era5-2mt-2019-03-uk.grib"
    config = ingest_config(tmp / "ingest.yaml", [str(sample)], tmp / "a.zarr")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", f"sqlite:///{tmp / 'climate.db'}")
        env.chdir(ROOT)
        result = climate(
            "submit", "ingest", "-c", str(config), "--address", head, "--pass-env", "--wait"
        )
    assert result.exit_code == 0, result.output
    assert "env passed: DATABASE_URL" in result.output
    return Ingested(submitted_id(result), config, tmp / "a.zarr", tmp / "climate.db")


def test_a_submitted_ingest_succeeds_with_the_env_it_was_given(ingested: Ingested) -> None:
    assert re.fullmatch(r"ingest-ingest-[0-9a-f]{10}-1", ingested.job_id)
    assert xr.open_zarr(ingested.store).sizes["time"] == 744
    assert ingested.database.stat().st_size > 0  # the job's ledger is the DATABASE_URL passed


def test_status_list_and_logs_show_the_job(head: str, ingested: Ingested) -> None:
    status = climate("jobs", "status", ingested.job_id, "--address", head)
    assert status.exit_code == 0 and "SUCCEEDED" in status.stdout and "ingest" in status.stdout
    listed = climate("jobs", "list", "--address", head)
    row = next(line for line in listed.stdout.splitlines() if ingested.job_id in line)
    assert "SUCCEEDED" in row and "ingest" in row
    logs = climate("jobs", "logs", ingested.job_id, "--address", head)
    assert logs.exit_code == 0 and "times added" in logs.stdout
    followed = climate("jobs", "logs", ingested.job_id, "--follow", "--address", head)
    assert followed.exit_code == 0 and "times added" in followed.stdout
    unknown = climate("jobs", "status", "ingest-nothing-0000000000-1", "--address", head)
    assert unknown.exit_code == 2 and "climate jobs list" in unknown.output


def test_the_same_work_is_refused_once_it_succeeded(head: str, ingested: Ingested) -> None:
    result = climate("submit", "ingest", "-c", str(ingested.config), "--address", head)
    assert result.exit_code == 1
    assert f"{ingested.job_id} (SUCCEEDED)" in result.output


def test_a_failed_job_is_retried_under_the_next_attempt(head: str, tmp_path: Path) -> None:
    config = ingest_config(
        tmp_path / "broken.yaml", [str(tmp_path / "missing.grib")], tmp_path / "a.zarr"
    )
    args = ("submit", "ingest", "-c", str(config), "--address", head)
    failed = climate(*args, "--wait")
    first = submitted_id(failed)
    assert failed.exit_code == 1 and first.endswith("-1") and f"{first} FAILED" in failed.output
    assert "missing.grib" in failed.stdout  # the job's own error, streamed from its logs
    retried = climate(*args)
    assert retried.exit_code == 0 and submitted_id(retried) == first[:-1] + "2"
    # while attempt 2 is still going, a third submission is refused naming it
    again = climate(*args)
    assert again.exit_code == 1 and re.search(rf"{first[:-1]}2 \((PENDING|RUNNING)\)", again.output)


def probe_output(logs: str) -> str | None:
    return next((line for line in logs.splitlines() if line.startswith("project ")), None)


def test_a_running_job_is_stopped(head: str) -> None:
    cluster = Cluster.connect(head)
    probe = (
        "import os, time; "
        "print('project', os.path.isfile('jobs/submission.py'), 'venv', os.path.exists('.venv'), "
        "flush=True); time.sleep(300)"
    )
    job_id = cluster.client.submit_job(
        entrypoint=shlex.join(["python", "-c", probe]), runtime_env=runtime_env(ROOT, {}, False)
    )
    # the logs echo the entrypoint, which names 'project' too: wait for the probe's own line
    deadline = time.monotonic() + 60
    while (printed := probe_output(cluster.logs(job_id))) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    # it runs in the uploaded copy of the project, without the excluded environment
    assert printed == "project True venv False", cluster.logs(job_id)
    result = climate("jobs", "stop", job_id, "--address", head)
    assert result.exit_code == 0, result.output
    assert cluster.wait(job_id, timeout_s=30, poll_s=0.2) == "STOPPED"
    assert "STOPPED" in climate("jobs", "status", job_id, "--address", head).stdout
    assert climate("jobs", "stop", "no-such-job", "--address", head).exit_code == 2
