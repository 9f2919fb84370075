"""``python -m jobs.nightly``: one night's analyses in, forecasts out, earlier ones verified.

The nightly config names the night's files (URL templates with ``{date:...}``), how long to
wait for them, the ingest, forecast and evaluate configs it runs with (by path: one source of
truth for store, model and lead times), an optional candidate model and the retry policy.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field, field_validator

from schemas.config import StorageOptions, StrictModel
from schemas.schedule_config import ScheduleConfig


class NightlySource(StrictModel):
    """Where a night's analysis files appear: URL templates formatted with the run's date."""

    urls: list[str] = Field(
        min_length=1,
        description="paths, globs or s3:// prefixes with {date:%Y%m%d}-style fields",
    )
    min_files: int = Field(default=1, ge=1, description="files that must be there to start")

    @field_validator("urls")
    @classmethod
    def _templates_format(cls, urls: list[str]) -> list[str]:
        for url in urls:
            try:
                url.format(date=date(2000, 1, 2))
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{url!r} is not a URL template: only {{date:FORMAT}} fields are allowed "
                    f"({exc})"
                ) from exc
        return urls

    def for_date(self, day: date) -> list[str]:
        """The URLs of one night."""
        return [url.format(date=day) for url in self.urls]


class WaitPolicy(StrictModel):
    """How long to wait for a night's files before the run fails."""

    timeout_minutes: float = Field(default=180.0, ge=0)
    poll_seconds: float = Field(default=60.0, gt=0)


class RetryPolicy(StrictModel):
    """Transient failures (object storage, database) are retried with exponential backoff."""

    attempts: int = Field(default=3, ge=1)
    backoff_seconds: float = Field(default=10.0, ge=0)


class CandidateModel(StrictModel):
    """A registered version evaluated each night and promoted only through the registry's gate."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


class NightlyConfig(StrictModel):
    """One nightly forecast cycle."""

    source: NightlySource
    init_hours: list[int] | None = Field(
        default=None, description="UTC hours of the night's times to forecast from; all if null"
    )
    ingest: str = Field(description="the ingest config (store, chunks); its source is replaced")
    forecast: str = Field(description="the forecast config (model, lead times, outputs)")
    evaluate: str | None = Field(default=None, description="the evaluate config, for a candidate")
    candidate: CandidateModel | None = None
    wait: WaitPolicy = WaitPolicy()
    retries: RetryPolicy = RetryPolicy()
    verification_report: str = "output/reports/verification"
    schedule: ScheduleConfig | None = Field(
        default=None, description="when `climate schedule` runs it (cron and time zone)"
    )
    storage: StorageOptions = StorageOptions()

    @field_validator("init_hours")
    @classmethod
    def _hours(cls, hours: list[int] | None) -> list[int] | None:
        if hours is not None and any(not 0 <= h <= 23 for h in hours):
            raise ValueError(f"init_hours {hours} must be hours of the day, 0..23")
        return sorted(set(hours)) if hours is not None else None
