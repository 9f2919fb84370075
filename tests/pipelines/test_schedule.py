"""The scheduler: due times across DST, runs when due, catch-up, no overlap, one lock, SIGTERM.

Real child processes and a real SQLite ledger; the cron ticks every second (croniter's sixth
field is seconds) so that the whole file runs in well under a minute.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from jobs.schedule import main as schedule_main
from pipelines.cron import CronSchedule
from pipelines.db import make_engine, migrate
from pipelines.ledger import RunLedger, RunRecord
from pipelines.process_lock import SchedulerBusyError, hold_lock
from pipelines.schedule import Scheduler
from schemas.schedule_config import ScheduleConfig

ROOT = Path(__file__).resolve().parents[2]
EVERY_SECOND = "* * * * * *"
LONDON = ZoneInfo("Europe/London")
# Appends "<due epoch> <start epoch> <end epoch>" to argv[1] after sleeping argv[3] s, then
# exits with status argv[4].
CHILD = (
    "import sys, time; start = time.time(); time.sleep(float(sys.argv[3])); "
    "open(sys.argv[1], 'a').write(f'{sys.argv[2]} {start} {time.time()}\\n'); "
    "sys.exit(int(sys.argv[4]))"
)
Command = Callable[[datetime], list[str]]


def child(log: Path, seconds: float = 0.1, status: int = 0) -> Command:
    def command(due: datetime) -> list[str]:
        due_s = str(due.timestamp())
        return [sys.executable, "-c", CHILD, str(log), due_s, str(seconds), str(status)]

    return command


def child_runs(log: Path) -> list[tuple[float, float, float]]:
    """(due, start, end) epoch seconds of each child run, in start order."""
    if not log.exists():
        return []
    rows = [tuple(float(x) for x in line.split()) for line in log.read_text().splitlines()]
    return sorted((row[0], row[1], row[2]) for row in rows)


def records(ledger: RunLedger) -> dict[str, RunRecord]:
    return {record.run_id: record for record in ledger.list(kind="nightly", limit=1000)}


def outcome(record: RunRecord) -> str:
    """succeeded, failed, running, or missed (recorded failed with missed: true)."""
    return "missed" if (record.summary or {}).get("missed") else record.status


def due_utc(record: RunRecord) -> datetime:
    return datetime.fromisoformat(record.config["due_utc"])


@pytest.fixture
def ledger(tmp_path: Path) -> RunLedger:
    engine = make_engine(f"sqlite:///{tmp_path / 'climate.db'}")
    migrate(engine)
    return RunLedger(engine)


def scheduler(tmp_path: Path, ledger: RunLedger, command: Command, **config: Any) -> Scheduler:
    settings = ScheduleConfig(**{"cron": EVERY_SECOND, **config})
    return Scheduler(settings, command, ledger, tmp_path / "schedule-nightly.lock")


# -- config and due times (no waiting) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"cron": "61 * * * *"}, "61 * * * *"),
        ({"cron": "30 6 * *"}, "4 field(s)"),
        ({"cron": "30 6 * * *", "timezone": "Europe/Londn"}, "Europe/Londn"),
        ({"cron": "30 6 * * *", "cronn": "x"}, "cronn"),
    ],
)
def test_a_bad_schedule_fails_at_load_naming_what_is_wrong(
    section: dict[str, str], named: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(named)):
        ScheduleConfig.model_validate(section)


def test_due_times_follow_the_clock_changes_of_the_time_zone() -> None:
    nightly = CronSchedule("30 6 * * *", LONDON)
    # Spring forward (Sunday 2025-03-30): 06:30 GMT = 06:30 UTC, then 06:30 BST = 05:30 UTC.
    before = nightly.latest_at_or_before(datetime(2025, 3, 30, 5, tzinfo=UTC))
    first = nightly.next_after(datetime(2025, 3, 29, 12, tzinfo=UTC))
    second = nightly.next_after(first)
    assert before == datetime(2025, 3, 29, 6, 30, tzinfo=UTC)
    assert (first, second) == (
        datetime(2025, 3, 30, 5, 30, tzinfo=UTC),
        datetime(2025, 3, 31, 5, 30, tzinfo=UTC),
    )
    assert first.astimezone(LONDON).hour == 6
    # Fall back (Sunday 2025-10-26): 06:30 BST = 05:30 UTC, then 06:30 GMT = 06:30 UTC.
    autumn = nightly.next_after(datetime(2025, 10, 25, 12, tzinfo=UTC))
    assert autumn == datetime(2025, 10, 26, 6, 30, tzinfo=UTC)
    # 01:30 happens twice on 2025-10-26 (BST, then GMT): it is due once.
    small_hours = CronSchedule("30 1 * * *", LONDON)
    dues, left_out = small_hours.between(
        datetime(2025, 10, 25, 12, tzinfo=UTC), datetime(2025, 10, 27, 12, tzinfo=UTC), 10
    )
    # (Compared in UTC: an ambiguous local time never equals a time of another zone.)
    assert [due.astimezone(UTC) for due in dues] == [
        datetime(2025, 10, 26, 0, 30, tzinfo=UTC),
        datetime(2025, 10, 27, 1, 30, tzinfo=UTC),
    ]
    assert left_out == 0


# -- running ------------------------------------------------------------------------------------


def test_runs_happen_when_due_and_are_recorded(tmp_path: Path, ledger: RunLedger) -> None:
    log = tmp_path / "runs.log"
    start = datetime.now(UTC)
    until = start + timedelta(seconds=3.5)
    scheduler(tmp_path, ledger, child(log, 0.2)).run(until=until)

    runs = child_runs(log)
    catch_up, *on_time = runs
    assert catch_up[0] <= start.timestamp() + 0.5  # the start-up catch-up of the last due time
    cron = CronSchedule(EVERY_SECOND, UTC)
    expected, _ = cron.between(datetime.fromtimestamp(catch_up[0], UTC), until, 100)
    assert [due for due, _, _ in on_time] == [d.timestamp() for d in expected]
    assert len(on_time) >= 3
    for due, started, _ in on_time:
        assert 0 <= started - due < 1.0, f"a run due at {due} started at {started}"
    rows = records(ledger)
    assert len(rows) == len(runs)
    for row in rows.values():
        assert row.run_id.startswith("schedule-")
        assert row.status == "succeeded"
        assert row.summary is not None
        assert row.summary["exit_code"] == 0
        assert row.summary["command"][:3] == [sys.executable, "-c", CHILD]


def test_a_failing_command_is_recorded_failed_and_not_rerun(
    tmp_path: Path, ledger: RunLedger
) -> None:
    log = tmp_path / "runs.log"
    sched = scheduler(tmp_path, ledger, child(log, 0.0, status=3), cron="* * * * *")
    if datetime.now(UTC).second >= 58:  # keep both calls within one minute
        time.sleep(3)
    assert sched.run_once() == 3
    assert sched.run_once() is None  # that due time ran (and failed): it is not run again
    [row] = records(ledger).values()
    assert row.status == "failed"
    assert row.summary is not None and row.summary["exit_code"] == 3
    assert row.error is not None and "exited with status 3" in row.error
    assert len(child_runs(log)) == 1

    broken = scheduler(tmp_path, ledger, lambda due: [str(tmp_path / "no-such-program")])
    assert broken.run_once(at=datetime.now(UTC) - timedelta(hours=1)) is None
    failed = [r for r in records(ledger).values() if r.error and "could not start" in r.error]
    assert len(failed) == 1 and "no-such-program" in failed[0].error


@pytest.mark.parametrize("catch_up", [True, False])
def test_the_last_missed_due_time_is_caught_up_once_and_older_ones_recorded_missed(
    tmp_path: Path, ledger: RunLedger, catch_up: bool
) -> None:
    log = tmp_path / "runs.log"
    command = child(log, 0.0)
    # A scheduler ran the due time 4.5 s ago, then none ran: four or five due times went by.
    first = scheduler(tmp_path, ledger, command)
    assert first.run_once(at=datetime.now(UTC) - timedelta(seconds=4.5)) == 0
    now = datetime.now(UTC)
    scheduler(tmp_path, ledger, command, catch_up=catch_up, grace_seconds=0).run(until=now)

    rows = sorted(records(ledger).values(), key=due_utc)
    statuses = [outcome(row) for row in rows]
    ran = child_runs(log)
    if catch_up:
        assert statuses == ["succeeded"] + ["missed"] * (len(rows) - 2) + ["succeeded"]
        assert [due for due, _, _ in ran] == [due_utc(r).timestamp() for r in (rows[0], rows[-1])]
    else:
        assert statuses == ["succeeded"] + ["missed"] * (len(rows) - 1)
        assert len(ran) == 1
    assert len(rows) >= 5
    gaps = {(due_utc(b) - due_utc(a)).total_seconds() for a, b in pairwise(rows)}
    assert gaps == {1.0}  # every due time since the last record has a row
    missed = rows[1]
    assert missed.summary is not None and "only the most recent" in missed.summary["reason"]


def test_a_restart_does_not_run_a_due_time_again(tmp_path: Path, ledger: RunLedger) -> None:
    log = tmp_path / "runs.log"
    if datetime.now(UTC).second >= 58:  # both start-ups within one minute
        time.sleep(3)
    for _ in range(2):
        sched = scheduler(tmp_path, ledger, child(log, 0.0), cron="* * * * *")
        sched.run(until=datetime.now(UTC))
    assert len(child_runs(log)) == 1
    assert [row.status for row in records(ledger).values()] == ["succeeded"]


def test_runs_never_overlap_and_do_not_pile_up(tmp_path: Path, ledger: RunLedger) -> None:
    log = tmp_path / "runs.log"
    start = datetime.now(UTC)
    # Each run takes 2.2 s; a due time comes every second.
    scheduler(tmp_path, ledger, child(log, 2.2)).run(until=start + timedelta(seconds=2.5))

    runs = child_runs(log)
    assert 2 <= len(runs) <= 3
    for (_, _, end), (_, next_start, _) in pairwise(runs):
        assert next_start >= end, "a run started before the previous one ended"
    for (_, _, end), (next_due, next_start, _) in pairwise(runs):
        assert next_start - end < 1.5  # the latest due time runs right after, not a backlog
        assert next_due <= end + 0.05
    rows = sorted(records(ledger).values(), key=due_utc)
    assert [outcome(r) for r in rows].count("succeeded") == len(runs)
    assert {outcome(r) for r in rows} == {"succeeded", "missed"}
    assert len({due for due, _, _ in runs}) == len(runs)


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path, ledger: RunLedger) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    sched = scheduler(
        tmp_path, ledger, lambda due: [sys.executable, "-c", stubborn], stop_timeout_s=0.3
    )
    threading.Timer(1.0, sched.stop).start()
    began = time.monotonic()
    sched.run()
    assert time.monotonic() - began < 3
    [row] = records(ledger).values()
    assert row.status == "failed"
    assert row.summary is not None and row.summary["exit_code"] == -signal.SIGKILL
    assert row.error is not None and "was killed" in row.error


# -- the lock and SIGTERM, across processes -------------------------------------------------------

SCHEDULER_SCRIPT = """
import sys
from pathlib import Path

from pipelines.db import make_engine
from pipelines.ledger import RunLedger
from pipelines.schedule import Scheduler
from schemas.schedule_config import ScheduleConfig

tmp = Path(sys.argv[1])
child = (
    "import os, signal, sys, time\\n"
    "log = open(sys.argv[1], 'a', buffering=1)\\n"
    "def stop(*_):\\n"
    "    log.write(f'terminated {os.getpid()}\\\\n'); sys.exit(143)\\n"
    "signal.signal(signal.SIGTERM, stop)\\n"
    "log.write(f'started {os.getpid()}\\\\n')\\n"
    "time.sleep(60)\\n"
)
command = lambda due: [sys.executable, "-c", child, str(tmp / "child.log")]
config = ScheduleConfig(cron="* * * * * *", stop_timeout_s=5)
ledger = RunLedger(make_engine(f"sqlite:///{tmp / 'climate.db'}"))
Scheduler(config, command, ledger, tmp / "schedule-nightly.lock").run()
"""


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_second_scheduler_refuses_and_sigterm_stops_the_first_cleanly(
    tmp_path: Path,
    ledger: RunLedger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = tmp_path / "scheduler.py"
    script.write_text(SCHEDULER_SCRIPT)
    child_log = tmp_path / "child.log"
    first = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT)
    try:
        assert wait_for(lambda: child_log.exists() and "started" in child_log.read_text(), 20)

        # The same config, through the entrypoint: refused, exit 2, naming the holder.
        config = tmp_path / "nightly.yaml"
        config.write_text(
            yaml.safe_dump({"schedule": {"cron": "30 6 * * *", "lock_dir": str(tmp_path)}})
        )
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'climate.db'}")
        assert schedule_main(["--config", str(config)]) == 2
        message = "".join(capsys.readouterr().err.split())  # rich wraps long lines anywhere
        assert f"(pid{first.pid})" in message and "schedule-nightly.lock" in message
        with pytest.raises(SchedulerBusyError, match=f"pid {first.pid}"):
            scheduler(tmp_path, ledger, child(tmp_path / "x.log")).run_once()

        child_pid = int(child_log.read_text().split()[1])
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0
        assert time.monotonic() - began < 4
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    assert f"terminated {child_pid}" in child_log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
    [row] = records(ledger).values()
    assert row.status == "failed"
    assert row.error is not None and "SIGTERM received" in row.error
    assert row.summary is not None and row.summary["exit_code"] == 143
    with hold_lock(tmp_path / "schedule-nightly.lock"):  # released
        pass
