"""``python -m jobs.ingest --config configs/ingest.yaml``: a Ray Job entrypoint for ingest."""

from __future__ import annotations

import sys

from rich.table import Table

from jobs.common import BarProgress, console, job_parser, read_config, setup_logging
from pipelines.db import make_engine, migrate
from pipelines.errors import ClimateError
from pipelines.ingest.runner import IngestSummary, run_ingest
from pipelines.ray_data import RayDataExecutor, ensure_ray
from schemas.config import IngestConfig
from schemas.settings import load_settings

EXIT_CLEAN, EXIT_FAILURES, EXIT_ERROR = 0, 1, 2


def print_summary(summary: IngestSummary) -> None:
    """The end-of-run report: counts, the store, and every failure with its fix."""
    table = Table(title=f"ingest run {summary.run_id}: {summary.status}", show_header=False)
    rows = [
        ("store", summary.store_url),
        ("files found", summary.files_found),
        ("already ingested (skipped)", summary.files_skipped),
        ("ingested", summary.files_ingested),
        ("unchanged (same values)", summary.files_unchanged),
        ("failed", len(summary.failures)),
        ("times added", summary.times_added),
        ("times in store", summary.times_in_store),
        ("chunks written", summary.chunks_written),
        ("MB written (uncompressed)", f"{summary.bytes_written / 1e6:.1f}"),
        ("seconds", f"{summary.seconds:.1f}"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
    for url, reason in summary.failures.items():
        console.print(f"[red]FAILED[/red] {url}\n    {reason}")


def ingest(config_path: str, overrides: list[str], verbose: bool = False) -> int:
    """Run one ingest; returns the process exit status (0 clean, 1 failures, 2 error)."""
    setup_logging(verbose)
    try:
        config = read_config(IngestConfig, config_path, overrides)
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
        ensure_ray(config.ray, settings)
        executor = RayDataExecutor(config.ray.concurrency, config.ray.cpus_per_task)
        with BarProgress() as progress:
            summary = run_ingest(config, settings, engine, executor, progress)
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_ERROR
    print_summary(summary)
    return EXIT_CLEAN if summary.clean else EXIT_FAILURES


def main(argv: list[str] | None = None) -> int:
    args = job_parser("python -m jobs.ingest", __doc__, "store.url=out.zarr").parse_args(argv)
    return ingest(args.config, args.overrides, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
