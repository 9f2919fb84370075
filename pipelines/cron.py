"""Due times of a cron expression in a time zone (croniter on tz-aware datetimes: daylight
saving changes are followed; a wall-clock time that occurs twice when the clocks go back is due
once)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from croniter import croniter

from schemas.schedule_config import ScheduleConfig

logger = logging.getLogger(__name__)


def _repeats_wall_time(due: datetime) -> bool:
    """Whether ``due`` is the second occurrence of a local time (the hour the clocks go back)."""
    return due.replace(fold=0).utcoffset() != due.utcoffset()


@dataclass(frozen=True)
class CronSchedule:
    """The due times of a cron expression in a time zone.

    Parameters
    ----------
    expression
        croniter syntax; a sixth field is seconds.
    zone
        The time zone the fields are read in.
    """

    expression: str
    zone: tzinfo

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> CronSchedule:
        """The schedule of a ``schedule:`` config section."""
        return cls(config.cron, config.zone)

    def _iter(self, start: datetime) -> croniter:
        if start.tzinfo is None:
            raise ValueError(f"{start.isoformat()} has no time zone; pass an aware datetime")
        return croniter(self.expression, start.astimezone(self.zone))

    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after ``moment``, aware, in the schedule's zone."""
        times = self._iter(moment)
        while True:
            due: datetime = times.get_next(datetime)
            if not _repeats_wall_time(due):
                return due

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last due time at or before ``moment``, aware, in the schedule's zone."""
        times = self._iter(moment + timedelta(microseconds=1))
        while True:
            due: datetime = times.get_prev(datetime)
            if not _repeats_wall_time(due):
                return due

    def between(self, after: datetime, until: datetime, limit: int) -> tuple[list[datetime], int]:
        """The due times in ``(after, until]``, oldest first, at most the newest ``limit``.

        Returns
        -------
        tuple[list[datetime], int]
            The due times, and how many older ones were left out (at least that many: the
            count stops at ``limit``).
        """
        if until <= after:
            return [], 0
        found: list[datetime] = []
        times = self._iter(until + timedelta(microseconds=1))
        while len(found) < 2 * limit:
            due: datetime = times.get_prev(datetime)
            if due <= after:
                break
            if not _repeats_wall_time(due):
                found.append(due)
        found.reverse()
        return found[-limit:], max(len(found) - limit, 0)
