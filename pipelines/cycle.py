"""One forecast cycle: ingest a set of new analysis files, then forecast from their times.

Shared by the nightly job and the streaming watcher. Both steps are idempotent under the
cycle's key: the ingest skips files already committed (same fingerprint), and the forecast's
run id is derived from the key, so a second cycle with the same key replaces its forecast rows
and run instead of adding to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from pipelines.errors import SourceError
from pipelines.executors import Executor
from pipelines.forecast.runner import ForecastSummary, run_forecast
from pipelines.ingest.runner import run_ingest
from pipelines.ingest.summary import IngestSummary
from pipelines.ledger import IngestLedger
from pipelines.sources import reader_for
from pipelines.storage import fsspec_options, inventory
from schemas.config import IngestConfig
from schemas.forecast_config import ForecastConfig
from schemas.settings import Settings


@dataclass(frozen=True)
class CycleResult:
    """What one cycle ingested and forecast."""

    key: str
    ingest: IngestSummary
    init_times: tuple[datetime, ...]
    forecast: ForecastSummary | None  # None when no initial time could be forecast

    def summary(self) -> dict[str, object]:
        return {
            "ingest_run": self.ingest.run_id,
            "files": self.ingest.files_found,
            "times_added": self.ingest.times_added,
            "init_times": [t.isoformat() for t in self.init_times],
            "forecast_run": self.forecast.run_id if self.forecast else None,
            "rows": self.forecast.rows if self.forecast else 0,
        }


def times_of_files(engine: Engine, store_url: str, file_urls: Sequence[str]) -> list[datetime]:
    """The analysis times that the committed files among ``file_urls`` put in the store."""
    wanted = set(file_urls)
    seconds = {
        int(t)
        for record in IngestLedger(engine).committed(store_url)
        if record.file_url in wanted
        for t in record.times
    }
    return [datetime.fromtimestamp(s, tz=UTC) for s in sorted(seconds)]


def resolve_files(config: IngestConfig, settings: Settings, patterns: Sequence[str]) -> list[str]:
    """The file URLs that paths, globs or prefixes name, as the ingest ledger records them."""
    reader = reader_for(config.source)
    found: set[str] = set()
    for pattern in patterns:
        options = fsspec_options(pattern, config.storage, settings)
        found.update(s.url for s in inventory(pattern, options, reader.suffixes, reader.is_store))
    return sorted(found)


def run_cycle(
    key: str,
    file_urls: Sequence[str],
    ingest_config: IngestConfig,
    forecast_config: ForecastConfig,
    settings: Settings,
    engine: Engine,
    executor: Executor,
    window: tuple[datetime, datetime] | None = None,
    hours: Sequence[int] | None = None,
) -> CycleResult:
    """Ingest ``file_urls`` into the analysis store, then forecast from the times they hold.

    Parameters
    ----------
    key
        Names the cycle (``nightly-2019-03-31``, ``watch-2019033112``); the runs it starts are
        ``<key>-ingest`` and ``<key>-forecast``, so a re-run of the cycle replaces them.
    file_urls
        The new analysis files: paths, globs or ``s3://`` URLs (resolved to files here).
    ingest_config, forecast_config
        Where the store is and how to ingest; which model and lead times to forecast with
        (their ``source.urls``, ``init_times`` and ``run_id`` are set here).
    window, hours
        Forecast only from the files' times in ``[start, end)`` and at these UTC hours.

    Raises
    ------
    SourceError
        A file could not be ingested (the others are; the forecast does not run).
    ClimateError
        The forecast failed; nothing of it is visible.
    """
    file_urls = resolve_files(ingest_config, settings, file_urls)
    ingest = ingest_config.model_copy(
        update={
            "source": ingest_config.source.model_copy(update={"urls": list(file_urls)}),
            "run_id": f"{key}-ingest",
        }
    )
    summary = run_ingest(ingest, settings, engine, executor)
    if summary.failures:
        url, reason = next(iter(summary.failures.items()))
        raise SourceError(url, f"not ingested in cycle {key}: {reason}")
    times = [
        t
        for t in times_of_files(engine, ingest.store.url, file_urls)
        if (window is None or window[0] <= t < window[1]) and (hours is None or t.hour in hours)
    ]
    if not times:
        return CycleResult(key, summary, (), None)
    forecast = forecast_config.model_validate(
        {
            **forecast_config.model_dump(),
            "analysis": ingest.store.url,
            "init_times": {"kind": "list", "times": times},
            "run_id": f"{key}-forecast",
        }
    )
    return CycleResult(key, summary, tuple(times), run_forecast(forecast, settings, engine))
