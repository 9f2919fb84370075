"""What a submission is: the work (kind, config, overrides), its id and attempt, the
entrypoint's resources and the runtime environment. Pure: no cluster is contacted here."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.markup import escape

from jobs.common import console
from pipelines.errors import ClimateError, ConfigError

if TYPE_CHECKING:  # imported when a command runs: `climate --help` stays fast
    from pydantic import BaseModel

# kind -> the entrypoint module it runs
KINDS: dict[str, str] = {
    "ingest": "jobs.ingest",
    "train": "jobs.train",
    "predict": "jobs.forecast",
    "evaluate": "jobs.evaluate",
    "nightly": "jobs.nightly",
}
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Sent to the job with --pass-env only: they may hold secrets (a database password).
PASS_ENV = ("DATABASE_URL", "MODEL_REGISTRY_URL", "S3_ENDPOINT_URL", "REDIS_URL")
# Never uploaded with the working directory: outputs, environments, caches, bench results.
EXCLUDES = [
    "output/",
    ".venv/",
    "venv/",
    ".git/",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "bench/results/",
    ".devpack/",
    ".devwheels/",
    ".whl/",
    "*.idx",
]
# Attempts in these states block a new submission of the same work.
BLOCKING = ("PENDING", "RUNNING", "SUCCEEDED")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
POLL_S = 1.0
T = TypeVar("T")


class ClusterError(ClimateError, ConnectionError):
    """The cluster's job API cannot be reached, or it refused a request."""


class JobNotFoundError(ClimateError, LookupError):
    """No job of that submission id on the cluster."""


class WorkExistsError(ClimateError, ValueError):
    """The same work is already pending, running or has succeeded on the cluster."""


# --- pure helpers: ids, attempts, resources ---------------------------------------------------


def work_digest(resolved: Mapping[str, Any], overrides: list[str]) -> str:
    """The sha256 (hex) of the resolved config and the overrides, in canonical JSON."""
    text = json.dumps(
        {"config": resolved, "overrides": overrides}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def work_prefix(kind: str, config_path: str | Path, digest: str) -> str:
    """``<kind>-<config stem>-<first 10 hex of digest>``: the submission ids of one work.

    Characters of the stem other than letters, digits, ``_`` and ``.`` become ``-``.
    """
    stem = re.sub(r"[^A-Za-z0-9_.]+", "-", Path(config_path).stem).strip("-") or "config"
    return f"{kind}-{stem}-{digest[:10]}"


def submission_id(prefix: str, attempt: int) -> str:
    """The submission id of ``attempt`` (1, 2, ...) of the work ``prefix``."""
    return f"{prefix}-{attempt}"


def attempt_of(prefix: str, job_id: str | None) -> int | None:
    """The attempt number of ``job_id`` if it is an attempt of ``prefix``, else None."""
    if job_id is None or not job_id.startswith(prefix + "-"):
        return None
    tail = job_id[len(prefix) + 1 :]
    return int(tail) if tail.isdigit() else None


def next_attempt(prefix: str, existing: Mapping[str, str]) -> int:
    """The attempt number for a new submission of ``prefix``.

    Parameters
    ----------
    prefix
        The work prefix (:func:`work_prefix`).
    existing
        Submission id -> status of the cluster's jobs (any jobs; others are ignored).

    Returns
    -------
    int
        The highest attempt of this work plus one (1 for new work).

    Raises
    ------
    WorkExistsError
        An attempt is pending, running or succeeded; the message names the latest such one.
    """
    attempts = {
        number: status
        for job_id, status in existing.items()
        if (number := attempt_of(prefix, job_id)) is not None
    }
    blocking = sorted(n for n, status in attempts.items() if status in BLOCKING)
    if blocking:
        job_id = submission_id(prefix, blocking[-1])
        status = attempts[blocking[-1]]
        fix = (
            "it is still going: follow it with `climate jobs logs ID --follow` or stop it with "
            "`climate jobs stop ID`"
            if status != "SUCCEEDED"
            else "its results stand; change the config or an override to submit new work"
        ).replace("ID", job_id)
        raise WorkExistsError(f"the same work was already submitted as {job_id} ({status}): {fix}")
    return max(attempts, default=0) + 1


@dataclass(frozen=True)
class Resources:
    """What the entrypoint (the job's driver process) reserves, and why."""

    cpus: float
    gpus: float
    reason: str


def entrypoint_resources(kind: str, config: Any) -> Resources:
    """The CPUs and GPUs the entrypoint itself reserves, derived from its config.

    ``train`` and ``evaluate`` compute in the driver: they reserve their thread count
    (``schedule.threads``; ``threads``, 1 when unset) and one GPU with ``device: cuda``.
    ``ingest``, ``predict`` and ``nightly`` only plan and wait in the driver while Ray tasks
    and actors reserve their own share (``cpus_per_task``, ``cpus_per_actor``,
    ``gpus_per_actor``): they reserve nothing, since a CPU or GPU held by the driver is one a
    worker cannot have (on a one-CPU cluster the ingest would never start its tasks).

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    config
        The validated config model (any mapping for ``nightly``).
    """
    if kind == "train":
        gpus = 1.0 if config.schedule.device == "cuda" else 0.0
        return Resources(float(config.schedule.threads), gpus, "train: schedule.threads/device")
    if kind == "evaluate":
        gpus = 1.0 if config.device == "cuda" else 0.0
        return Resources(float(config.threads or 1), gpus, "evaluate: threads/device")
    return Resources(0.0, 0.0, f"{kind}: the driver plans; Ray tasks and actors reserve theirs")


def runtime_env(root: Path, environ: Mapping[str, str], pass_env: bool) -> dict[str, Any]:
    """The job's runtime environment: ``root`` as working_dir, and the settings variables
    found in ``environ`` when ``pass_env``."""
    env: dict[str, Any] = {"working_dir": str(root), "excludes": list(EXCLUDES)}
    passed = {name: environ[name] for name in PASS_ENV if pass_env and environ.get(name)}
    if passed:
        env["env_vars"] = passed
    return env


def config_argument(path: Path, root: Path) -> tuple[str, bool]:
    """The ``--config`` path the job is given, and whether it travels in the working dir.

    A config inside ``root`` (and not excluded) is given relative to it, as the job runs in its
    copy of ``root``; any other is given absolute, and the cluster's nodes must see that path.
    """
    resolved = path.resolve()
    try:
        relative = resolved.relative_to(root.resolve())
    except ValueError:
        return str(resolved), False
    for part in relative.parts:
        if any(fnmatch.fnmatch(part, pattern.rstrip("/")) for pattern in EXCLUDES):
            return str(resolved), False
    return relative.as_posix(), True


def resolve_address(address: str | None, environ: Mapping[str, str]) -> str:
    """``--address``, else ``RAY_ADDRESS``, else Ray's default dashboard address."""
    return address or environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


# --- the work: a config read and validated here -----------------------------------------------


@dataclass(frozen=True)
class Work:
    """One job to submit: the kind, its config as read here, and what the job is given."""

    kind: str
    config_path: str
    config_arg: str
    overrides: list[str]
    resolved: dict[str, Any]
    file_sha256: str
    resources: Resources

    @property
    def digest(self) -> str:
        return work_digest(self.resolved, self.overrides)

    @property
    def prefix(self) -> str:
        return work_prefix(self.kind, self.config_path, self.digest)

    @property
    def entrypoint(self) -> str:
        args = ["python", "-m", KINDS[self.kind], "--config", self.config_arg]
        for override in self.overrides:
            args += ["--set", override]
        return shlex.join(args)

    def metadata(self) -> dict[str, str]:
        """Ray job metadata (string values only)."""
        return {
            "kind": self.kind,
            "config": self.config_path,
            "config_sha256": self.file_sha256,
            "work_sha256": self.digest,
            "overrides": json.dumps(self.overrides),
        }


def _config_model(kind: str) -> type[BaseModel] | None:
    if kind == "ingest":
        from schemas.config import IngestConfig

        return IngestConfig
    if kind == "train":
        from schemas.train_config import TrainConfig

        return TrainConfig
    if kind == "predict":
        from schemas.forecast_config import ForecastConfig

        return ForecastConfig
    if kind == "evaluate":
        from schemas.evaluate_config import EvaluateConfig

        return EvaluateConfig
    return None


def load_work(
    kind: str,
    config_path: str,
    overrides: list[str],
    root: Path,
    cpus: float | None = None,
    gpus: float | None = None,
) -> Work:
    """Read and validate the config of ``kind`` as its job will, before anything is submitted.

    Raises
    ------
    ConfigError
        Unknown kind, unreadable or invalid config (every problem with its key and value).
    """
    import yaml

    from schemas.config import apply_overrides, load_config

    if kind not in KINDS:
        raise ConfigError(f"unknown job kind {kind!r}; use one of: {', '.join(KINDS)}")
    path = Path(config_path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file ({exc.strerror}); give the path of "
            "a YAML config, e.g. --config configs/ingest.yaml"
        ) from exc
    model = _config_model(kind)
    try:
        if model is not None:  # the job's own model: unknown keys and bad values refused here
            config: Any = load_config(model, path, overrides)
            resolved = config.model_dump(mode="json")
        else:  # no model to check against: the YAML as the job will read it
            config = yaml.safe_load(raw) or {}
            if not isinstance(config, dict):
                raise ValueError(
                    f"{path}: expected a mapping at the top level, found {type(config).__name__}"
                )
            config = apply_overrides(config, list(overrides))
            resolved = json.loads(json.dumps(config, default=str))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    derived = entrypoint_resources(kind, config)
    resources = Resources(
        derived.cpus if cpus is None else cpus,
        derived.gpus if gpus is None else gpus,
        derived.reason if cpus is None and gpus is None else "--cpus/--gpus",
    )
    config_arg, travels = config_argument(path, root)
    if not travels:
        console.print(
            f"[yellow]note:[/yellow] {escape(str(path))} is outside the uploaded working "
            f"directory; the job reads it at {escape(config_arg)}, which the cluster's nodes "
            "must see (put it under the project, e.g. configs/, to send it with the job)",
            highlight=False,
            soft_wrap=True,
        )
    return Work(
        kind=kind,
        config_path=str(path),
        config_arg=config_arg,
        overrides=list(overrides),
        resolved=resolved,
        file_sha256=hashlib.sha256(raw).hexdigest(),
        resources=resources,
    )


def check_project_root(root: Path) -> None:
    """Refuse to upload a directory that is not the project (it would lack ``jobs/``)."""
    if not (root / "jobs").is_dir() or not (root / "pipelines").is_dir():
        raise ConfigError(
            f"{root} is not the project root (no jobs/ and pipelines/ here), and it is what "
            "would be uploaded as the job's working_dir: run `climate submit` from the project "
            "directory"
        )
