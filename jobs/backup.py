"""``climate backup`` and ``climate restore``: the database and the registry's objects.

Exit status: 0 done; 1 refused (the backup is incomplete or damaged, or the target holds data
and --force was not given: nothing was changed); 2 bad input, configuration or connection
error. The database is ``DATABASE_URL``, the registry ``MODEL_REGISTRY_URL``; S3 endpoints and
credentials come from the environment as for every job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs.common import EXIT_OK, console, setup_logging, typer_exit_codes

if TYPE_CHECKING:  # imported when a command runs: `climate --help` stays fast
    from sqlalchemy import Engine

    from pipelines.backup.location import BackupLocation
    from pipelines.models.artefact_store import ArtefactStore

out = Console(soft_wrap=True)
DEFAULT_KEEP = 7


def _open(url: str, migrate_database: bool) -> tuple[Engine, ArtefactStore, BackupLocation]:
    """Settings -> database, registry store and backup location, with their S3 options."""
    from pipelines.backup.location import BackupLocation
    from pipelines.db import make_engine, migrate
    from pipelines.models.artefact_store import ArtefactStore
    from pipelines.storage import fsspec_options
    from schemas.config import StorageOptions
    from schemas.settings import load_settings

    settings = load_settings()
    engine = make_engine(settings.database_url)
    if migrate_database:
        migrate(engine)
    storage = StorageOptions()
    registry = settings.model_registry_url
    store = ArtefactStore(registry, fsspec_options(registry, storage, settings))
    return engine, store, BackupLocation(url, fsspec_options(url, storage, settings))


def _rows_table(title: str, rows: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in rows.items():
        table.add_row(name, str(count))
    return table


def _say(line: str) -> None:
    console.print(escape(line), highlight=False, soft_wrap=True)


def backup(url: str, keep: int = DEFAULT_KEEP, verbose: bool = False) -> int:
    """Back up to ``url``/<UTC timestamp>/ and keep the ``keep`` newest backups."""
    from pipelines.backup.errors import BackupRefusedError
    from pipelines.backup.run import run_backup

    setup_logging(verbose)
    with typer_exit_codes(BackupRefusedError):
        engine, store, location = _open(url, migrate_database=True)
        try:
            report = run_backup(engine, store, location, keep, progress=_say)
        finally:
            engine.dispose()
    out.print(_rows_table(f"backup {report.name}", report.rows))
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    deleted = f"; deleted {len(report.deleted)} older" if report.deleted else ""
    out.print(
        f"backed up {sum(report.rows.values())} rows and {report.objects} registry objects "
        f"({report.bytes / 1e6:.1f} MB) to {report.url} in {report.seconds:.1f} s; keeping "
        f"the {keep} newest{deleted}",
        markup=False,
        highlight=False,
    )
    return EXIT_OK


def restore(url: str, which: str = "latest", force: bool = False, verbose: bool = False) -> int:
    """Restore backup ``which`` (a name or ``latest``) from ``url``."""
    from pipelines.backup.errors import BackupRefusedError
    from pipelines.backup.run import run_restore

    setup_logging(verbose)
    with typer_exit_codes(BackupRefusedError):
        engine, store, location = _open(url, migrate_database=False)
        try:
            report = run_restore(engine, store, location, which, force, progress=_say)
        finally:
            engine.dispose()
    out.print(_rows_table(f"restored {report.name}", report.rows))
    moved = (
        f"; {report.artefact_urls_rewritten} artefact URLs now point at {store.root_url}"
        if report.artefact_urls_rewritten
        else ""
    )
    out.print(
        f"restored {sum(report.rows.values())} rows (schema {report.revision}, then migrated to "
        f"the newest) and {report.objects_written} registry objects ({report.objects_unchanged} "
        f"already there) in {report.seconds:.1f} s{moved}",
        markup=False,
        highlight=False,
    )
    return EXIT_OK
