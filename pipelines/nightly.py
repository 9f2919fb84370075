"""The nightly forecast: wait for a date's analyses, ingest them, forecast, verify, maybe promote.

One run key per date (``nightly-YYYY-MM-DD``): the ingest, forecast and evaluation it starts
are named after it, so a second run for the same date resumes (files already ingested are
skipped) and replaces (the forecast run and the verification rows), never duplicates. The
steps that touch object storage or the database are retried with exponential backoff; a date
whose files do not appear within the wait fails with that reason. Every run, failed or not, is
in the run ledger (kind ``nightly``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine

from pipelines.cycle import CycleResult, resolve_files, run_cycle
from pipelines.errors import ConfigError, ModelError, SinkError, SourceError, describe
from pipelines.evaluate.pipeline import run_evaluation
from pipelines.executors import Executor
from pipelines.ledger import RunLedger
from pipelines.models.registry import ModelRegistry
from pipelines.storage import fsspec_options
from pipelines.verification import verify_store, write_report
from schemas.config import IngestConfig, load_config
from schemas.evaluate_config import EvaluateConfig
from schemas.forecast_config import ForecastConfig
from schemas.nightly_config import NightlyConfig, RetryPolicy
from schemas.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT = (SourceError, SinkError)  # object storage and database: worth another try


@dataclass(frozen=True)
class NightlyResult:
    """What one night's run did."""

    run_id: str
    day: date
    files: list[str]
    cycle: CycleResult
    verified_rows: int
    report: Path
    candidate: dict[str, object] | None

    def summary(self) -> dict[str, object]:
        return {
            "date": self.day.isoformat(),
            "files": len(self.files),
            **self.cycle.summary(),
            "verified_rows": self.verified_rows,
            "report": str(self.report),
            "candidate": self.candidate,
        }


def run_key(day: date) -> str:
    """The run id of a date's nightly run."""
    return f"nightly-{day.isoformat()}"


def retrying(
    action: str, policy: RetryPolicy, work: Callable[[], T], sleep: Callable[[float], None]
) -> T:
    """``work()``, retried on transient errors with exponential backoff; the last error raised."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return work()
        except TRANSIENT as exc:
            if attempt == policy.attempts:
                raise
            pause = policy.backoff_seconds * 2 ** (attempt - 1)
            log.warning(
                "%s failed (attempt %d of %d), again in %.0f s: %s",
                action, attempt, policy.attempts, pause, describe(exc),
            )  # fmt: skip
            sleep(pause)
    raise AssertionError("unreachable")


def wait_for_files(
    config: NightlyConfig,
    ingest: IngestConfig,
    day: date,
    settings: Settings,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """The date's files once at least ``source.min_files`` are there; SourceError after the wait."""
    patterns = config.source.for_date(day)
    deadline = time.monotonic() + config.wait.timeout_minutes * 60
    while True:
        found: list[str] = []
        for pattern in patterns:
            try:
                found += resolve_files(ingest, settings, [pattern])
            except SourceError as exc:
                missing = exc
        if len(found) >= config.source.min_files:
            return sorted(set(found))
        if time.monotonic() >= deadline:
            raise SourceError(
                ", ".join(patterns),
                f"{len(found)} of at least {config.source.min_files} analysis file(s) for "
                f"{day.isoformat()} after waiting {config.wait.timeout_minutes:g} min "
                f"(last look: {describe(missing) if not found else 'too few files'}); check "
                "that the upstream delivery ran, or raise wait.timeout_minutes",
            )
        log.info("waiting for the files of %s: %d found", day.isoformat(), len(found))
        sleep(config.wait.poll_seconds)


def _candidate(
    config: NightlyConfig, settings: Settings, engine: Engine, key: str
) -> dict[str, object]:
    """Evaluate the candidate, then ask the registry to promote it (its gate decides)."""
    assert config.candidate is not None
    if config.evaluate is None:
        raise ModelError("candidate is set but evaluate (an evaluate config) is not: set both")
    name, version = config.candidate.name, config.candidate.version
    source = {"kind": "registry", "name": name, "version": version}
    evaluate = EvaluateConfig.model_validate(
        {**load_config(EvaluateConfig, config.evaluate).model_dump(), "model": source}
    )
    ledger, run_id = RunLedger(engine), f"{key}-evaluate"
    ledger.start("evaluate", evaluate.model_dump(mode="json"), run_id)
    try:
        result = run_evaluation(evaluate, settings, engine, run_id)
    except BaseException as exc:
        ledger.finish(run_id, "failed", error=describe(exc))
        raise
    ledger.finish(run_id, "succeeded", summary=result.summary())
    try:
        record = ModelRegistry.from_settings(engine, settings, evaluate.storage).promote(
            name, version
        )
    except ModelError as exc:
        log.warning("candidate %s %s not promoted: %s", name, version, exc)
        return {"name": name, "version": version, "promoted": False, "reason": str(exc)}
    return {"name": name, "version": version, "promoted": record.status == "promoted"}


def _night(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, day_time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def run_nightly(
    config: NightlyConfig,
    day: date,
    settings: Settings,
    engine: Engine,
    executor: Executor,
    sleep: Callable[[float], None] = time.sleep,
) -> NightlyResult:
    """One night: wait, ingest, forecast from the date's times, verify, maybe promote.

    Raises
    ------
    ClimateError
        The run failed (after its retries); it is recorded failed with the reason. A
        ConfigError when a referenced config does not load.
    """
    key = run_key(day)
    ledger = RunLedger(engine)
    ledger.start("nightly", {**config.model_dump(mode="json"), "date": day.isoformat()}, key)
    try:
        ingest = load_config(IngestConfig, config.ingest)
        forecast = load_config(ForecastConfig, config.forecast)
        files = wait_for_files(config, ingest, day, settings, sleep)
        window = _night(day)

        def cycle_once() -> CycleResult:
            return run_cycle(
                key, files, ingest, forecast, settings, engine, executor, window, config.init_hours
            )

        cycle = retrying("ingest and forecast", config.retries, cycle_once, sleep)
        options = fsspec_options(forecast.output.zarr.url, forecast.storage, settings)
        verified = retrying(
            "verification",
            config.retries,
            lambda: verify_store(forecast.output.zarr.url, ingest.store.url, engine, options),
            sleep,
        )
        report = write_report(engine, config.verification_report)
        candidate = _candidate(config, settings, engine, key) if config.candidate else None
    except ValueError as exc:  # a referenced config that does not load
        ledger.finish(key, "failed", error=describe(exc))
        raise ConfigError(str(exc)) from exc
    except BaseException as exc:
        ledger.finish(key, "failed", error=describe(exc))
        raise
    result = NightlyResult(key, day, files, cycle, verified, report, candidate)
    ledger.finish(key, "succeeded", summary=result.summary())
    return result
