"""``python -m jobs.nightly --config configs/nightly.yaml [--date YYYY-MM-DD]``: one night.

Waits (bounded) for the date's analysis files, ingests them, forecasts from the date's initial
times with the configured (promoted) model, verifies the kept forecasts whose analyses have
arrived, and evaluates and tries to promote a candidate if one is named. The run is
``nightly-<date>`` in the run ledger; a second run for the same date resumes or replaces.
Exit status: 0 succeeded, 1 the run failed (recorded with the reason), 2 bad input.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime

from rich.markup import escape
from rich.table import Table

from jobs.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    console,
    job_parser,
    read_config,
    setup_logging,
)
from pipelines.errors import ClimateError, ConfigError
from schemas.nightly_config import NightlyConfig


def _day(text: str | None) -> date:
    if text is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--date {text!r} is not a date: use YYYY-MM-DD") from exc


def _print(summary: dict[str, object], run_id: str) -> None:
    table = Table(title=f"nightly run {run_id}: succeeded", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)


def nightly(config_path: str, overrides: list[str], day: str | None, verbose: bool = False) -> int:
    """Run one night; returns the exit status (0 succeeded, 1 failed, 2 bad input)."""
    setup_logging(verbose)
    try:
        from pipelines.db import make_engine, migrate
        from pipelines.ray_data import RayDataExecutor, ensure_ray
        from schemas.config import RayConfig
        from schemas.settings import load_settings

        config = read_config(NightlyConfig, config_path, overrides)
        when = _day(day)
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
        ensure_ray(RayConfig(), settings)
        executor = RayDataExecutor()
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_ERROR
    from pipelines.nightly import run_key, run_nightly

    try:
        result = run_nightly(config, when, settings, engine, executor)
    except ClimateError as exc:
        console.print(
            f"[red]nightly run {run_key(when)} failed:[/red] {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_REFUSED
    _print(result.summary(), result.run_id)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.nightly", __doc__, "wait.timeout_minutes=30")
    parser.add_argument("--date", default=None, help="the night to run (YYYY-MM-DD); today (UTC)")
    args = parser.parse_args(argv)
    return nightly(args.config, args.overrides, args.date, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
