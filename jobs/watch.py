"""``python -m jobs.watch --config configs/watch.yaml``: streaming mode.

Follows a prefix (a directory or ``s3://bucket/prefix/``) and, as each new initial time's
files are complete, ingests them and forecasts from them, once each. SIGTERM or Ctrl-C stops
after the current cycle; a second one abandons it (it is redone at the next start).
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from rich.markup import escape

from jobs.common import console, job_parser, read_config, setup_logging
from pipelines.db import make_engine, migrate
from pipelines.errors import ClimateError
from pipelines.ray_data import RayDataExecutor, ensure_ray
from pipelines.watch import Watcher, load_setup
from schemas.settings import load_settings
from schemas.watch_config import WatchConfig

EXIT_CLEAN, EXIT_ERROR = 0, 2


def _stop_on_signals(watcher: Watcher) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if watcher.stopping:
            raise KeyboardInterrupt  # the second signal abandons the current cycle
        console.print(
            f"{signal.Signals(signum).name}: stopping after the current cycle "
            "(send it again to abandon the cycle)"
        )
        watcher.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def watch(
    config_path: str,
    overrides: list[str],
    verbose: bool = False,
    max_cycles: int | None = None,
    until_idle: float | None = None,
) -> int:
    """Watch until stopped; returns the exit status (0 stopped, 2 could not start)."""
    setup_logging(verbose)
    logging.getLogger("pipelines.watch").setLevel(logging.INFO)
    try:
        setup = load_setup(read_config(WatchConfig, config_path, overrides))
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
        ensure_ray(setup.ingest.ray, settings)
        executor = RayDataExecutor(setup.ingest.ray.concurrency, setup.ingest.ray.cpus_per_task)
        watcher = Watcher(setup, settings, engine, executor)
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    config = setup.config
    console.print(
        escape(
            f"watching {config.source.url} for {config.source.pattern} (settle "
            f"{config.settle_seconds:g} s, poll {config.poll_seconds:g} s) into "
            f"{setup.ingest.store.url}"
        ),
        highlight=False,
    )
    _stop_on_signals(watcher)
    try:
        cycles = watcher.run(max_cycles, until_idle)
    except KeyboardInterrupt:
        console.print("stopped: the current cycle was abandoned; it is redone at the next start")
        return EXIT_CLEAN
    console.print(f"stopped after {cycles} cycle(s)")
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.watch", __doc__, "settle_seconds=30")
    parser.add_argument("--max-cycles", type=int, default=None, help="stop after N cycles")
    parser.add_argument(
        "--until-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop once nothing ran or settled for this long",
    )
    args = parser.parse_args(argv)
    return watch(args.config, args.overrides, args.verbose, args.max_cycles, args.until_idle)


if __name__ == "__main__":
    sys.exit(main())
