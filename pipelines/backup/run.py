"""The two operations end to end: back up (dump, copy, upload, manifest, prune) and restore.

Both stage files in a local temporary folder (``$CLIMATE_CACHE_DIR``): a backup dumps and
copies there, then uploads, then writes the manifest last. A restore downloads every file
there and checks every size and sha256 against the manifest before it touches the target;
the bytes it loads are the bytes it checked.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy import Engine

from pipelines.backup.errors import BackupRefusedError
from pipelines.backup.load import check_revision, load_database, occupied_tables, refuse_occupied
from pipelines.backup.location import BackupLocation
from pipelines.backup.manifest import (
    MANIFEST_NAME,
    DatabaseEntry,
    FileEntry,
    Manifest,
    backup_name,
    dump_manifest,
)
from pipelines.backup.objects import (
    REGISTRY_FOLDER,
    StagedObject,
    download_objects,
    put_object,
    registry_keys,
    stored_sha256,
)
from pipelines.backup.retention import prune
from pipelines.backup.snapshot import dump_database
from pipelines.code_version import described_version
from pipelines.db import mask_url, migrate
from pipelines.errors import ConfigError
from pipelines.models.artefact_store import CARD_NAME, ONNX_NAME, ArtefactStore
from pipelines.models.artefacts import file_sha256
from pipelines.storage import cache_dir
from schemas.tables import utcnow

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class BackupReport:
    """What a backup wrote."""

    name: str
    url: str
    rows: dict[str, int]
    objects: int
    bytes: int
    seconds: float
    deleted: list[str]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did."""

    name: str
    rows: dict[str, int]
    objects_written: int
    objects_unchanged: int
    revision: str
    artefact_urls_rewritten: int
    seconds: float


def _staging() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="backup-", dir=cache_dir())


def _missing_objects(dump_dir: Path, keys: set[str]) -> list[str]:
    """Registry rows whose ONNX file or card is not among the copied objects."""
    import pyarrow.parquet as pq

    models = pq.read_table(dump_dir / "db" / "models.parquet", columns=["name", "version"])
    missing = []
    names, versions = models["name"].to_pylist(), models["version"].to_pylist()
    for name, version in zip(names, versions, strict=True):
        for file in (ONNX_NAME, CARD_NAME):
            if f"{name}/{version}/{file}" not in keys:
                missing.append(
                    f"registry row {name} {version}: {file} is missing from the registry and "
                    "is not in the backup"
                )
    return missing


def run_backup(
    engine: Engine,
    store: ArtefactStore,
    location: BackupLocation,
    keep: int,
    progress: Progress = _quiet,
) -> BackupReport:
    """Back up the database and the registry's objects to a new timestamped folder.

    Parameters
    ----------
    engine
        The database (at the newest schema revision).
    store
        The model registry's object storage.
    location
        Where backups live; the new one goes to ``<location>/<UTC timestamp>/``.
    keep
        How many complete backups to keep; older ones are deleted after this one is complete.
    progress
        Called with a line for each step.

    Raises
    ------
    ConfigError
        ``keep`` below 1, or the database is not at this code's schema revision.
    SinkError, SourceError
        The database, the registry or the backup location failed; the new folder is removed.
    """
    if keep < 1:
        raise ConfigError(f"--keep {keep}: keep at least 1 backup")
    started = utcnow()
    clock = time.perf_counter()
    name = backup_name(started)
    with _staging() as staging:
        work = Path(staging)
        progress("dumping the database (one snapshot)")
        dump = dump_database(engine, work)
        progress(f"copying the registry's objects from {store.root_url}")
        staged = download_objects(store, registry_keys(store), work / REGISTRY_FOLDER)
        warnings = dump.warnings + _missing_objects(work, {s.key for s in staged})
        files = dump.files + [
            FileEntry(path=f"{REGISTRY_FOLDER}/{s.key}", sha256=s.sha256, size=s.size)
            for s in staged
        ]
        progress(f"uploading {len(files)} files to {location.describe(name)}")
        try:
            for entry in files:
                location.upload(work / entry.path, name, entry.path)
            manifest = Manifest(
                name=name,
                started_at=started,
                finished_at=utcnow(),
                code_version=described_version(),
                database=DatabaseEntry(
                    kind="postgresql" if engine.dialect.name == "postgresql" else "sqlite",
                    url=mask_url(engine.url),
                    revision=dump.revision,
                ),
                tables=dump.tables,
                registry_url=store.url(store.root),
                registry_objects=[s.key for s in staged],
                files=files,
                warnings=warnings,
            )
            location.write_bytes(name, MANIFEST_NAME, dump_manifest(manifest))  # last
        except BaseException:
            location.discard(name)
            raise
    for warning in warnings:
        logger.warning("backup %s: %s", name, warning)
    deleted = prune(location, keep, name)
    return BackupReport(
        name=name,
        url=location.describe(name),
        rows={t.name: t.rows for t in dump.tables},
        objects=len(staged),
        bytes=manifest.total_bytes,
        seconds=time.perf_counter() - clock,
        deleted=deleted,
        warnings=warnings,
    )


def choose_backup(location: BackupLocation, which: str) -> str:
    """The backup ``which`` names: ``latest`` (newest complete) or an exact name.

    Raises
    ------
    ConfigError
        No complete backup at the location, or no backup of that name.
    """
    listing = location.listing()
    if which == "latest":
        if not listing.complete:
            incomplete = f" ({len(listing.incomplete)} incomplete)" if listing.incomplete else ""
            raise ConfigError(
                f"no complete backup at {location.url}{incomplete}; check --from, or make one "
                "with `climate backup --to URL`"
            )
        return listing.complete[-1]
    if which in listing.complete or which in listing.incomplete:
        return which  # an incomplete one is refused when its manifest is read
    known = ", ".join(listing.complete[-5:]) or "none"
    raise ConfigError(
        f"no backup {which!r} at {location.url} (newest complete: {known}); pass --backup "
        "latest or one of those names"
    )


def _safe(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in {"..", "."} for p in parts):
        raise BackupRefusedError(
            f"the manifest lists the path {path!r}, which leaves the backup folder; the backup "
            "is damaged or forged: restore another one"
        )
    return path


def fetch_verified(location: BackupLocation, manifest: Manifest, directory: Path) -> None:
    """Download every file of the manifest into ``directory`` and check size and sha256.

    Raises
    ------
    BackupRefusedError
        A file is missing, or its size or sha256 differs from the manifest's; names the file.
    """
    listed = {entry.path for entry in manifest.files}
    needed = [t.file for t in manifest.tables] + [
        f"{REGISTRY_FOLDER}/{key}" for key in manifest.registry_objects
    ]
    unlisted = [path for path in needed if path not in listed]
    if unlisted:
        raise BackupRefusedError(
            f"backup {manifest.name}: the manifest names {unlisted[0]} without its checksum; "
            "the backup is damaged: restore another one"
        )
    for entry in manifest.files:
        local = directory / _safe(entry.path)
        where = location.describe(manifest.name, entry.path)
        try:
            location.fetch(manifest.name, entry.path, local)
        except FileNotFoundError as exc:
            raise BackupRefusedError(
                f"backup {manifest.name} is missing {where}; the backup is damaged: nothing "
                "was restored; restore another backup (--backup NAME)"
            ) from exc
        size, sha256 = local.stat().st_size, file_sha256(local)
        if size != entry.size or sha256 != entry.sha256:
            raise BackupRefusedError(
                f"backup {manifest.name}: {where} has {size} bytes, sha256 {sha256}; the "
                f"manifest says {entry.size} bytes, sha256 {entry.sha256}. The file is "
                "damaged: nothing was restored; restore another backup (--backup NAME)"
            )


def run_restore(
    engine: Engine,
    store: ArtefactStore,
    location: BackupLocation,
    which: str = "latest",
    force: bool = False,
    progress: Progress = _quiet,
) -> RestoreReport:
    """Restore a backup into the database and the registry.

    Order: read and check the manifest; download and check every file; refuse a target that
    holds rows or registry objects with other bytes (unless ``force``); put the registry's
    objects; load the database in one transaction; migrate it to the newest revision.

    Raises
    ------
    BackupRefusedError
        The backup is incomplete or damaged, or the target is not empty and not ``force``;
        nothing was changed.
    ConfigError
        No such backup, or a schema revision this code does not know.
    SinkError, SourceError
        The database or an object store failed; a failed database load is rolled back.
    """
    clock = time.perf_counter()
    name = choose_backup(location, which)
    manifest = location.read_manifest(name)
    progress(f"backup {location.describe(name)}: {len(manifest.files)} files, checking them")
    with _staging() as staging:
        work = Path(staging)
        fetch_verified(location, manifest, work)
        current = check_revision(engine, manifest)
        occupied = occupied_tables(engine, [t.name for t in manifest.tables])
        if occupied and not force:
            raise refuse_occupied(occupied, mask_url(engine.url))
        objects = [
            StagedObject(
                key,
                work / REGISTRY_FOLDER / key,
                manifest.file(f"{REGISTRY_FOLDER}/{key}").sha256,
                manifest.file(f"{REGISTRY_FOLDER}/{key}").size,
            )
            for key in manifest.registry_objects
        ]
        existing = {obj.key: stored_sha256(store, obj.key) for obj in objects}
        differ = [o.key for o in objects if existing[o.key] not in {None, o.sha256}]
        if differ and not force:
            raise BackupRefusedError(
                f"model registry {store.root_url} holds other bytes at {len(differ)} key(s) of "
                f"the backup ({', '.join(differ[:5])}); restore into an empty registry, or "
                "pass --force to overwrite them"
            )
        progress(f"restoring {len(objects)} registry objects to {store.root_url}")
        todo = [o for o in objects if existing[o.key] != o.sha256]
        for obj in todo:
            put_object(store, obj)
        progress(f"loading {len(manifest.tables)} tables into {mask_url(engine.url)}")
        here = store.url(store.root)
        roots = (manifest.registry_url, here) if manifest.registry_url != here else None
        rewritten = load_database(engine, manifest, work, current, roots)
    migrate(engine)
    return RestoreReport(
        name=name,
        rows={t.name: t.rows for t in manifest.tables},
        objects_written=len(todo),
        objects_unchanged=len(objects) - len(todo),
        revision=manifest.database.revision,
        artefact_urls_rewritten=rewritten,
        seconds=time.perf_counter() - clock,
    )
