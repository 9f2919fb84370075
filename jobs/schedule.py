"""``python -m jobs.schedule --config configs/nightly.yaml``: run the nightly job on its cron.

Reads the config's ``schedule:`` section (the rest of the file is the nightly's and is not read
here), takes the scheduler lock (beside the SQLite database, or in ``schedule.lock_dir``: a
second scheduler refuses to start, naming the holder's PID) and at each due time runs
``python -m jobs.nightly --config FILE --date <the due time's local date>``, one at a time.
Every due time is recorded in the run ledger (kind ``nightly``, id
``schedule-<local date>T<HHMMSS>``): succeeded, failed, or failed with ``missed: true``.
SIGTERM or SIGINT stops it: a running nightly gets SIGTERM and its run is recorded as failed.

Exit status: 0 stopped cleanly (with ``--once``: the run succeeded, or that due time had run
already), 1 with ``--once``: the run failed, 2 the scheduler could not start (bad config, lock
held by another scheduler, unreachable database).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from rich.markup import escape

from jobs.common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, console, setup_logging
from pipelines.errors import ClimateError, ConfigError
from schemas.config import parse_config, read_yaml
from schemas.schedule_config import ScheduleConfig

_EXAMPLE = "schedule: {cron: '30 6 * * *', timezone: Europe/London, catch_up: true}"


def read_schedule(path: str | Path) -> ScheduleConfig:
    """The validated ``schedule:`` section of a job config file.

    Raises
    ------
    ConfigError
        The file cannot be read, is not YAML, has no ``schedule:`` section or an invalid one.
    """
    path = Path(path)
    try:
        data = read_yaml(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not isinstance(data, dict) or "schedule" not in data:
        raise ConfigError(f"{path} has no schedule: section; add one, e.g. {_EXAMPLE}")
    try:
        return parse_config(ScheduleConfig, data["schedule"], f"{path}: schedule")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def nightly_command(config_path: str | Path) -> Callable[[datetime], list[str]]:
    """The argv of the nightly job for a due time: its local date is the ``--date``."""
    config = str(Path(config_path).resolve())

    def command(due: datetime) -> list[str]:
        date = due.date().isoformat()
        return [sys.executable, "-m", "jobs.nightly", "--config", config, "--date", date]

    return command


def schedule(config_path: str, once: bool = False, verbose: bool = False) -> int:
    """Run the nightly on its schedule until stopped; returns the exit status (0, 1, 2)."""
    setup_logging(verbose)
    # The scheduler's decisions (next due time, starts, ends, missed) are its output.
    logging.getLogger("pipelines.schedule").setLevel(logging.INFO)
    try:
        from pipelines.db import make_engine, migrate
        from pipelines.ledger import RunLedger
        from pipelines.process_lock import lock_path_for
        from pipelines.schedule import Scheduler
        from schemas.settings import load_settings

        config = read_schedule(config_path)
        engine = make_engine(load_settings().database_url)
        migrate(engine)
        scheduler = Scheduler(
            config,
            nightly_command(config_path),
            RunLedger(engine),
            lock_path_for(engine, config.lock_dir),
        )
        if not once:
            scheduler.run()
            return EXIT_OK
        code = scheduler.run_once()
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    return EXIT_OK if code in (None, 0) or scheduler.stopped else EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.schedule", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config with a schedule: section")
    parser.add_argument(
        "--once", action="store_true", help="run the most recent due time (unless it ran) and exit"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    return schedule(args.config, args.once, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
