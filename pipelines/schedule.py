"""Run one command on a cron schedule, one at a time, every due time recorded in the run ledger.

A :class:`Scheduler` computes the due times of a cron in its time zone (``croniter`` on
tz-aware datetimes, so daylight saving changes are followed; a wall-clock time that occurs twice
when the clocks go back is due once), runs the command of each due time as a child process and
waits for it. Every due time gets one row in the run ledger, ``schedule-<local date>T<HHMMSS>``:
succeeded or failed from the child's exit status, or failed with ``missed: true`` in its
summary when it was not run.

Only one scheduler runs per lock file (``fcntl.flock``, held for the scheduler's life) and only
one child at a time. A due time that comes while a child runs, or while no scheduler runs, is run
once afterwards when ``catch_up`` is on or it is at most ``grace_seconds`` late; of several such
due times only the most recent is run and the older ones are recorded as missed. SIGTERM and
SIGINT stop the scheduler at once: a running child gets SIGTERM (SIGKILL after
``stop_timeout_s``) and its run is recorded as failed with the reason.
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from pipelines.cron import CronSchedule
from pipelines.ledger import RunLedger, RunRecord
from pipelines.process_lock import hold_lock
from schemas.schedule_config import ScheduleConfig

logger = logging.getLogger(__name__)

RUN_ID_PREFIX = "schedule-"
# At most this many due times are recorded as missed at once (after a long outage of a
# seconds-level cron); older ones are only counted in a warning.
MAX_MISSED_RECORDS = 100
# How many of the newest ledger rows of the kind are searched for this scheduler's last record.
_RECENT_RECORDS = 200
_POLL_S = 0.05  # how often a running child is checked for its end
_MAX_NAP_S = 60.0  # waits are cut into naps so that a wall-clock jump is noticed
_RAN = frozenset({"succeeded", "failed"})

Command = Callable[[datetime], Sequence[str]]


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _late(due: datetime, now: datetime) -> float:
    return max((now - due).total_seconds(), 0.0)


class Scheduler:
    """Run a command at each due time of a cron, one at a time, recording each in the ledger.

    Parameters
    ----------
    config
        The cron, its time zone and the catch-up rules.
    command
        The argv to run for a due time (an aware datetime in the cron's zone), e.g.
        ``lambda due: [sys.executable, "-m", "jobs.nightly", "--date", due.date().isoformat()]``.
    ledger
        Where every due time is recorded, with ids ``schedule-<local date>T<HHMMSS>``.
    lock_path
        The lock file (see :func:`lock_path_for`): a second scheduler on it refuses to start.
    kind
        The run kind of the records.
    """

    def __init__(
        self,
        config: ScheduleConfig,
        command: Command,
        ledger: RunLedger,
        lock_path: str | Path,
        *,
        kind: str = "nightly",
    ) -> None:
        self.config = config
        self.cron = CronSchedule.from_config(config)
        self.command = command
        self.ledger = ledger
        self.lock_path = Path(lock_path)
        self.kind = kind
        self._stop_reason: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)

    @property
    def stopped(self) -> str | None:
        """Why the scheduler was stopped, or ``None`` while it was not."""
        return self._stop_reason

    def run_id(self, due: datetime) -> str:
        """The ledger id of a due time: ``schedule-<local date>T<HHMMSS>``."""
        return f"{RUN_ID_PREFIX}{due.astimezone(self.cron.zone):%Y-%m-%dT%H%M%S}"

    def stop(self, reason: str = "stop requested") -> None:
        """Stop waiting now; a running child gets SIGTERM. Safe from signal handlers, threads."""
        if self._stop_reason is None:
            self._stop_reason = reason
        with suppress(OSError):  # a full pipe: the scheduler is being woken already
            os.write(self._wake_w, b"x")

    def run(self, until: datetime | None = None) -> None:
        """Run until stopped (SIGTERM, SIGINT, :meth:`stop`) or past ``until``.

        At start-up the most recent due time is caught up if it has no succeeded or failed
        record (older unrecorded ones since this scheduler's last record are recorded missed);
        then each due time runs when it comes.

        Parameters
        ----------
        until
            Stop before the first due time after this (for bounded runs and tests).

        Raises
        ------
        SchedulerBusyError
            Another scheduler holds the lock.
        """
        with self._session():
            last = self._start_up(datetime.now(UTC))
            while self._stop_reason is None:
                due = self.cron.next_after(last)
                if until is not None and due > until:
                    logger.info(
                        "next due time %s is after %s: stopping", due.isoformat(), until.isoformat()
                    )
                    break
                logger.info(
                    "next due time %s (%s) = %s UTC, in %.1f s",
                    due.isoformat(),
                    self.config.timezone,
                    due.astimezone(UTC).isoformat(),
                    _late(datetime.now(UTC), due),
                )
                if self._sleep_until(due):
                    break
                now = datetime.now(UTC)
                pending, left_out = self.cron.between(last, now, MAX_MISSED_RECORDS + 1)
                if pending:
                    last = self._settle(
                        pending, left_out, now, "the previous run was still running"
                    )
            if self._stop_reason is not None:
                logger.info("scheduler stopped: %s", self._stop_reason)

    def run_once(self, at: datetime | None = None) -> int | None:
        """Run the last due time at or before ``at`` (now by default) unless it already ran.

        Returns
        -------
        int | None
            The child's exit status, or ``None`` when that due time has a succeeded or failed
            record already (nothing is run).
        """
        with self._session():
            now = datetime.now(UTC)
            due = self.cron.latest_at_or_before(at or now)
            record = self.ledger.get(self.run_id(due))
            if record is not None and record.status in _RAN:
                logger.info(
                    "due time %s already ran (%s): nothing to do", due.isoformat(), record.status
                )
                return None
            return self._run_child(due, _late(due, now))

    # -- start-up and catch-up ------------------------------------------------------------

    def _last_record(self) -> RunRecord | None:
        """This scheduler's record of the latest due time among the kind's newest rows."""
        ours = [
            record
            for record in self.ledger.list(kind=self.kind, limit=_RECENT_RECORDS)
            if record.run_id.startswith(RUN_ID_PREFIX) and "due_utc" in (record.config or {})
        ]
        return max(ours, key=_due_of, default=None)

    def _start_up(self, now: datetime) -> datetime:
        """Catch up or record what came while no scheduler ran; the latest due time handled."""
        latest = self.cron.latest_at_or_before(now)
        last = self._last_record()
        pending: list[datetime] = []
        left_out = 0
        if last is not None:
            last_due = _due_of(last)
            # In UTC: an ambiguous local time never equals a time of another zone.
            if last.status == "running" and last_due != latest.astimezone(UTC):
                self.ledger.finish(
                    last.run_id,
                    "failed",
                    summary={"command": last.config.get("command")},
                    error="interrupted: the scheduler ended while this run was running",
                )
                logger.info("recorded %s as failed: it was interrupted", last.run_id)
            pending, left_out = self.cron.between(last_due, now, MAX_MISSED_RECORDS + 1)
        if not pending:
            record = self.ledger.get(self.run_id(latest))
            if record is not None and record.status in _RAN:
                logger.info(
                    "most recent due time %s already ran (%s): nothing to catch up",
                    latest.isoformat(),
                    record.status,
                )
                return latest
            pending = [latest]
        return self._settle(pending, left_out, now, "no scheduler was running")

    def _settle(
        self, pending: list[datetime], left_out: int, now: datetime, why_older: str
    ) -> datetime:
        """Run the newest of due times that have come (if allowed), record the rest missed."""
        *older, latest = pending
        if left_out:
            logger.warning(
                "%d or more due times before %s were not run and are not recorded "
                "(only the newest %d are)",
                left_out,
                older[0].isoformat() if older else latest.isoformat(),
                MAX_MISSED_RECORDS,
            )
        for due in older:
            self._record_missed(due, f"{why_older}; only the most recent due time is caught up")
        late = _late(latest, now)
        if self.config.catch_up or late <= self.config.grace_seconds:
            if late > self.config.grace_seconds:
                logger.info("catching up due time %s, %.1f s late", latest.isoformat(), late)
            self._run_child(latest, late)
        else:
            self._record_missed(
                latest,
                f"{why_older}; {late:.1f} s late, more than grace_seconds="
                f"{self.config.grace_seconds:g}, and catch_up is off",
            )
        return latest

    # -- one due time ----------------------------------------------------------------------

    def _describe(self, due: datetime, argv: list[str]) -> dict[str, Any]:
        return {
            "due": due.isoformat(),
            "due_utc": due.astimezone(UTC).isoformat(),
            "cron": self.config.cron,
            "timezone": self.config.timezone,
            "command": argv,
            "scheduler_pid": os.getpid(),
        }

    def _argv(self, due: datetime) -> list[str]:
        return [str(part) for part in self.command(due)]

    def _record_missed(self, due: datetime, reason: str) -> None:
        run_id, argv = self.run_id(due), self._argv(due)
        self.ledger.start(self.kind, self._describe(due, argv), run_id)
        # "failed" with missed: true in the summary: the ledger's statuses are those of runs
        self.ledger.finish(
            run_id,
            "failed",
            summary={"command": argv, "reason": reason, "missed": True},
            error=f"missed: {reason}",
        )
        logger.info("missed %s (due %s): %s", run_id, due.isoformat(), reason)

    def _run_child(self, due: datetime, late: float) -> int | None:
        """Run the command of ``due`` to its end and record how it ended; its exit status."""
        run_id, argv = self.run_id(due), self._argv(due)
        self.ledger.start(self.kind, self._describe(due, argv), run_id)
        summary: dict[str, Any] = {"command": argv, "exit_code": None, "late_s": round(late, 3)}
        logger.info(
            "starting %s (due %s, %.1f s late): %s", run_id, due.isoformat(), late, shlex.join(argv)
        )
        started = time.monotonic()
        try:
            child = subprocess.Popen(argv, start_new_session=True)
        except OSError as exc:
            error = f"could not start {shlex.join(argv)}: {exc}; check the command and its path"
            self.ledger.finish(run_id, "failed", summary=summary, error=error)
            logger.error("%s failed: %s", run_id, error)
            return None
        code, stop_note = self._wait_child(child)
        summary["exit_code"] = code
        summary["duration_s"] = round(time.monotonic() - started, 3)
        if code == 0 and stop_note is None:
            self.ledger.finish(run_id, "succeeded", summary=summary)
        else:
            error = stop_note or f"{shlex.join(argv)} exited with status {code}"
            self.ledger.finish(run_id, "failed", summary=summary, error=error)
        logger.info("ended %s: exit status %s after %.1f s", run_id, code, summary["duration_s"])
        return code

    def _wait_child(self, child: subprocess.Popen[bytes]) -> tuple[int, str | None]:
        """Wait for the child; on stop, SIGTERM it (SIGKILL its group after the timeout)."""
        while (code := child.poll()) is None:
            if self._wait(_POLL_S):
                break
        else:
            return code, None
        timeout = self.config.stop_timeout_s
        logger.info("stopping (%s): sending SIGTERM to pid %d", self._stop_reason, child.pid)
        child.terminate()
        try:
            code = child.wait(timeout=timeout)
            note = f"SIGTERM and exited with status {code}"
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            code = child.wait()
            note = f"SIGTERM, did not exit within stop_timeout_s={timeout:g} s and was killed"
        return code, f"stopped: the scheduler was stopped ({self._stop_reason}); the job got {note}"

    # -- waiting, signals, lock -------------------------------------------------------------

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; whether the scheduler was stopped."""
        if self._stop_reason is None:
            select.select([self._wake_r], [], [], max(seconds, 0.0))
        return self._stop_reason is not None

    def _sleep_until(self, moment: datetime) -> bool:
        """Sleep until the wall clock reaches ``moment``; whether the scheduler was stopped."""
        while (remaining := (moment - datetime.now(UTC)).total_seconds()) > 0:
            if self._wait(min(remaining, _MAX_NAP_S)):
                return True
        return self._stop_reason is not None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop(f"{signal.Signals(signum).name} received")

    @contextmanager
    def _session(self) -> Iterator[None]:
        """Hold the lock and, in the main thread, stop on SIGTERM and SIGINT."""
        with hold_lock(self.lock_path):
            logger.info(
                "scheduler (pid %d) holds %s: cron %r in %s, catch_up %s",
                os.getpid(),
                self.lock_path,
                self.config.cron,
                self.config.timezone,
                self.config.catch_up,
            )
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGTERM, signal.SIGINT)
            previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _due_of(record: RunRecord) -> datetime:
    return datetime.fromisoformat(record.config["due_utc"])
