"""The ``schedule:`` section of a scheduled job's config: when it runs and how it catches up.

Importable on its own: the nightly config embeds :class:`ScheduleConfig` as its ``schedule``
field, and ``jobs.schedule`` validates that section alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import Field, field_validator

from schemas.config import StrictModel

_CRON_HELP = (
    "use five fields (minute hour day-of-month month day-of-week) and an optional sixth for "
    "seconds, e.g. '30 6 * * *' (06:30 every day) or '* * * * * */10' (every 10 seconds)"
)


class ScheduleConfig(StrictModel):
    """When a job runs (a cron in an IANA time zone) and what happens to due times not run.

    A due time is run when it comes. One that came while the scheduler was busy or not running
    is run once, late, when ``catch_up`` is on (only the most recent such due time; older ones
    are recorded as missed), or when it is at most ``grace_seconds`` late; otherwise it is
    recorded as missed.
    """

    cron: str = Field(description="croniter syntax; a sixth field is seconds")
    timezone: str = Field(
        default="UTC", description="IANA time zone of the cron, e.g. Europe/London"
    )
    catch_up: bool = Field(
        default=True, description="run the most recent due time not run (at start-up, after a run)"
    )
    grace_seconds: float = Field(
        default=60.0, ge=0, description="how late a due time may start and still run on time"
    )
    stop_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="on stop, how long the running job has after SIGTERM before SIGKILL",
    )
    lock_dir: str | None = Field(
        default=None,
        description="directory of the scheduler's lock file; beside a SQLite database if unset",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        expression = " ".join(value.split())
        n_fields = len(expression.split())
        if n_fields not in (5, 6) and not expression.startswith("@"):
            raise ValueError(f"cron {value!r} has {n_fields} field(s); {_CRON_HELP}")
        try:
            croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
        except CroniterError as exc:
            raise ValueError(
                f"cron {value!r} is not a valid cron expression ({exc}); {_CRON_HELP}"
            ) from exc
        return expression

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"timezone {value!r} is not an IANA time zone name ({exc}); "
                "use one like Europe/London, America/New_York or UTC"
            ) from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The time zone of the cron."""
        return ZoneInfo(self.timezone)
