"""``climate sync --to DIR``: the served model, the latest committed forecast run and the API-key
hashes, copied into a directory that a service can answer from with nothing else reachable.

A sync is written into a fresh folder beside ``DIR`` (``.DIR.<time>-<hex>``), ``sync.json``
last, and becomes visible when the symlink ``DIR`` is replaced in one ``os.replace``: a reader
sees the previous sync or the new one, never half of one, and a sync that fails leaves ``DIR``
as it was. Nothing is copied when ``DIR`` already holds the same model version, run and keys;
what did not change (the model, or the run) is hard-linked from the previous sync rather than
copied again. The previous sync is kept until the next one (readers that opened it finish);
older ones are deleted. One sync per ``DIR`` at a time (a lock file beside it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from pipelines.db import make_engine
from pipelines.errors import ConfigError, StoreError
from pipelines.forecast.store import POINTER, CommittedRun, ForecastStore, open_forecast_store
from pipelines.models.artefacts import file_sha256, load_card, verify_sha256
from pipelines.models.registry import ModelRegistry
from pipelines.storage import explain_storage_error, filesystem, fsspec_options
from pipelines.sync.keys import export_keys
from pipelines.sync.manifest import (
    CARD_FILE,
    FORECAST_DIR,
    KEYS_FILE,
    MANIFEST,
    MODEL_FILE,
    IncompleteSyncError,
    NothingToSyncError,
    SyncedFile,
    SyncedModel,
    SyncedRun,
    SyncManifest,
    verify_sync,
)
from schemas.config import StorageOptions
from schemas.model_card import ModelCard, card_path_for
from schemas.model_source import ModelFile, RegistryModel
from schemas.settings import Settings

log = logging.getLogger(__name__)
_VERSION = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")


class Progress(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str) -> None: ...


@dataclass(frozen=True)
class SyncResult:
    """What a sync did."""

    directory: Path  # DIR, the symlink
    target: Path  # the folder DIR names
    manifest: SyncManifest
    changed: bool  # False: DIR already held this model, run and keys; nothing was written


@dataclass(frozen=True)
class _Wanted:
    """What the source holds now, read before anything is copied."""

    model: SyncedModel
    card: ModelCard
    run: CommittedRun
    keys: bytes | None

    def same_as(self, manifest: SyncManifest, keys: bytes | None) -> bool:
        return (
            manifest.model.model_dump(exclude={"source"})
            == self.model.model_dump(exclude={"source"})
            and (manifest.run.run_id, manifest.run.path) == (self.run.run_id, self.run.path)
            and keys == self.keys
        )


# -- the directory ---------------------------------------------------------------------------


def _prefix(directory: Path) -> str:
    return f".{directory.name}."


def _check_directory(directory: Path) -> None:
    """Refuse a ``DIR`` that a sync must not replace: a file, or a folder of other files (or a
    symlink to one)."""
    if not directory.exists() or _ours(directory):  # absent, dangling, or a sync's symlink
        return
    if not directory.is_dir():
        raise ConfigError(f"--to {directory}: it is a file; give a directory to sync into")
    entries = {entry.name for entry in directory.iterdir()}
    if entries and MANIFEST not in entries:
        raise ConfigError(
            f"--to {directory}: the directory holds other files ({', '.join(sorted(entries)[:5])})"
            "; give a new or empty directory, or one written by `climate sync`"
        )


def _ours(directory: Path) -> bool:
    """Whether ``directory`` is a symlink to a sync folder beside it (even a damaged one)."""
    if not directory.is_symlink():
        return False
    target = Path(os.readlink(directory))
    name = target.name
    prefix = _prefix(directory)
    beside = not target.is_absolute() and len(target.parts) == 1
    return beside and name.startswith(prefix) and bool(_VERSION.match(name[len(prefix) :]))


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One sync into ``directory`` at a time: an exclusive ``flock`` on a file beside it."""
    path = directory.parent / f"{_prefix(directory)}lock"
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"--to {directory}: cannot write beside it ({exc.strerror})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"--to {directory}: another `climate sync` is writing it ({path} is locked); "
                "wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def _current(directory: Path) -> tuple[SyncManifest, Path] | None:
    """The intact sync ``directory`` holds now and its folder; None for none (or a damaged
    one, which the new sync replaces)."""
    if not directory.exists():
        return None
    try:
        manifest = verify_sync(directory)
    except IncompleteSyncError as exc:
        if (directory / MANIFEST).exists():
            log.warning("the sync in %s is damaged (%s); syncing afresh", directory, exc)
        return None
    return manifest, directory.resolve()


def _swap(directory: Path, folder: Path) -> Path | None:
    """Point ``directory`` at ``folder`` in one step; the folder it named before, if any."""
    link = directory.parent / f"{_prefix(directory)}link-{uuid.uuid4().hex[:8]}"
    link.symlink_to(folder.name, target_is_directory=True)
    previous: Path | None = None
    try:
        if directory.is_symlink():
            previous = directory.resolve()
        elif directory.is_dir():  # an empty folder, or a sync copied here as plain files
            previous = folder.parent / f"{_prefix(directory)}{_stamp()}"
            directory.rename(previous)  # the one moment DIR is absent: plain folders only
        os.replace(link, directory)
    except OSError as exc:
        link.unlink(missing_ok=True)
        raise ConfigError(f"--to {directory}: cannot replace it ({exc.strerror})") from exc
    return previous


def _clean(directory: Path, keep: set[Path]) -> None:
    """Delete earlier syncs and leftovers of failed ones beside ``directory``, but ``keep``."""
    prefix = _prefix(directory)
    for entry in directory.parent.iterdir():
        if not entry.name.startswith(prefix) or entry in keep or entry.is_symlink():
            continue
        rest = entry.name[len(prefix) :]
        if entry.is_dir() and _VERSION.match(rest.removesuffix(".partial")):
            shutil.rmtree(entry, ignore_errors=True)


def _stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


# -- the source --------------------------------------------------------------------------------


def _wanted_model(
    source: ModelFile | RegistryModel, registry: ModelRegistry | None, settings: Settings
) -> tuple[SyncedModel, ModelCard]:
    if isinstance(source, ModelFile):
        card = load_card(source.card or card_path_for(source.path))
        synced = SyncedModel(
            name=card.name, version=card.version, sha256=card.sha256, source=source.path
        )
        return synced, card
    assert registry is not None
    version = None if source.version == "promoted" else source.version
    record = registry.version_or_promoted(source.name, version)
    synced = SyncedModel(
        name=record.name,
        version=record.version,
        sha256=record.sha256,
        source=settings.model_registry_url,
    )
    return synced, record.card


def _committed(store: ForecastStore) -> CommittedRun:
    current = store.current()
    if current is None:
        raise NothingToSyncError(
            f"{store.url}: no committed forecast run to sync; run `climate predict` first, or "
            "pass --forecast-store"
        )
    return current


# -- copying -----------------------------------------------------------------------------------


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _reuse_tree(source: Path, target: Path) -> int:
    count = 0
    for path in sorted(source.rglob("*")):
        if path.is_file():
            _link_or_copy(path, target / path.relative_to(source))
            count += 1
    return count


def _copy_model(
    wanted: _Wanted,
    source: ModelFile | RegistryModel,
    registry: ModelRegistry | None,
    previous: tuple[SyncManifest, Path] | None,
    folder: Path,
) -> None:
    target = folder / MODEL_FILE
    if previous is not None and previous[0].model.sha256 == wanted.model.sha256:
        _link_or_copy(previous[1] / MODEL_FILE, target)
    elif isinstance(source, ModelFile):
        verify_sha256(Path(source.path), wanted.card)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.path, target)  # a copy: the source file may change in place
    else:
        assert registry is not None
        fetched, _card = registry.fetch(wanted.model.name, wanted.model.version)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fetched, target)
    verify_sha256(target, wanted.card)  # the copy, as the card says (as resolve_model checks)
    wanted.card.write(folder / CARD_FILE)


def _copy_run(
    url: str,
    options: dict[str, Any],
    run: CommittedRun,
    target: Path,
    progress: Progress | None,
) -> None:
    fs, root = filesystem(url, options)
    source = f"{root.rstrip('/')}/{run.path}"
    try:
        files = sorted(str(f) for f in fs.find(source))
    except Exception as exc:
        reason = explain_storage_error(url, exc)
        raise StoreError(f"{url}: cannot list forecast run {run.run_id} ({reason})") from exc
    if not files:
        raise StoreError(
            f"{url}/{run.path}: the committed run {run.run_id} has no files (deleted by a newer "
            "run's commit?); run `climate sync` again"
        )
    if progress is not None:
        progress.stage("run", len(files))
    for file in files:
        relative = file[len(source) :].lstrip("/")
        local = target / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(file, str(local))
        except FileNotFoundError as exc:
            raise StoreError(
                f"{url}/{run.path}: {relative} disappeared while it was copied (a newer run was "
                "committed and this one pruned?); run `climate sync` again"
            ) from exc
        except Exception as exc:
            reason = explain_storage_error(url, exc)
            raise StoreError(f"{url}: cannot copy run {run.run_id} ({reason})") from exc
        if progress is not None:
            progress.advance("run")


def _write_pointer(store: Path, run: CommittedRun) -> None:
    """The copy's ``CURRENT.json``: the one run, as the source committed it."""
    body = json.dumps({"format": 1, "runs": [asdict(run)]}, indent=1)
    (store / POINTER).write_text(body)
    if ForecastStore(str(store)).current() != run:
        raise StoreError(f"{store}: the copied pointer does not name run {run.run_id}")


def _files(folder: Path) -> dict[str, SyncedFile]:
    return {
        path.relative_to(folder).as_posix(): SyncedFile(
            size=path.stat().st_size, sha256=file_sha256(path)
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _write(
    folder: Path,
    wanted: _Wanted,
    source: ModelFile | RegistryModel,
    registry: ModelRegistry | None,
    store: tuple[str, dict[str, Any]],
    previous: tuple[SyncManifest, Path] | None,
    progress: Progress | None,
) -> SyncManifest:
    _copy_model(wanted, source, registry, previous, folder)
    runs = folder / FORECAST_DIR
    if previous is not None and previous[0].run.path == wanted.run.path:
        _reuse_tree(previous[1] / FORECAST_DIR / wanted.run.path, runs / wanted.run.path)
    else:
        _copy_run(*store, wanted.run, runs / wanted.run.path, progress)
    _write_pointer(runs, wanted.run)
    try:
        open_forecast_store(str(runs))
    except StoreError as exc:
        raise StoreError(f"the copied run does not open: {exc}") from exc
    if wanted.keys is not None:
        (folder / KEYS_FILE).write_bytes(wanted.keys)
    manifest = SyncManifest(
        synced_at=datetime.now(UTC),
        model=wanted.model,
        run=SyncedRun(**asdict(wanted.run), source=store[0]),
        keys=None if wanted.keys is None else len(json.loads(wanted.keys)["keys"]),
        files=_files(folder),
    )
    manifest.write(folder / MANIFEST)  # last: without it the folder is not a sync
    return manifest


def sync_to(
    directory: str | Path,
    forecast_store: str,
    model: ModelFile | RegistryModel,
    settings: Settings,
    storage: StorageOptions | None = None,
    *,
    keys: bool = True,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Copy the served model, the latest committed run and the API-key hashes into ``directory``.

    Parameters
    ----------
    directory
        ``DIR``: created as a symlink to the sync's folder (beside it); an existing sync
        there is replaced in one step, or left alone when nothing changed.
    forecast_store
        The forecast store (a path or ``s3://``); its committed run is copied.
    model
        The served model: a registry name (its promoted or a pinned version) or a file.
    settings
        ``DATABASE_URL`` (registry rows, API keys), ``MODEL_REGISTRY_URL``, S3 credentials.
    storage
        Object-store options of the forecast store and the registry.
    keys
        Copy the hashes of the API keys not revoked (``keys.json``).
    engine
        The registry's database; made from ``settings`` (and disposed) when None and needed.
    progress
        Told the run's file count (stage ``run``) and each file copied.

    Returns
    -------
    SyncResult
        The manifest now in ``directory``, and whether anything was written.

    Raises
    ------
    ModelError
        No promoted (or no such) version, or a model file that does not match its card.
    NothingToSyncError
        No run is committed in the forecast store.
    StoreError, SourceError, SinkError
        A store or the database cannot be read (the message names its URL).
    ConfigError
        ``directory`` cannot be written or holds other files; another sync is writing it.
    """
    directory = Path(directory)
    storage = storage or StorageOptions()
    options = fsspec_options(forecast_store, storage, settings)
    _check_directory(directory)
    needs_db = keys or isinstance(model, RegistryModel)
    own = engine is None and needs_db
    if engine is None and needs_db:
        engine = make_engine(settings.database_url)
    try:
        registry = (
            ModelRegistry.from_settings(engine, settings, storage)
            if isinstance(model, RegistryModel) and engine is not None
            else None
        )
        with _locked(directory):
            synced, card = _wanted_model(model, registry, settings)
            run = _committed(ForecastStore(forecast_store, options))
            key_bytes = export_keys(engine) if keys and engine is not None else None
            wanted = _Wanted(synced, card, run, key_bytes)
            previous = _current(directory)
            if previous is not None:
                old_keys = previous[0].keys
                kept = (previous[1] / KEYS_FILE).read_bytes() if old_keys is not None else None
                if wanted.same_as(previous[0], kept):
                    log.info("%s is up to date: nothing copied", directory)
                    return SyncResult(directory, previous[1], previous[0], changed=False)
            folder = directory.parent / f"{_prefix(directory)}{_stamp()}"
            partial = folder.with_name(folder.name + ".partial")
            try:
                manifest = _write(
                    partial, wanted, model, registry, (forecast_store, options), previous, progress
                )
                partial.rename(folder)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            replaced = _swap(directory, folder)
            keep = {folder} | ({replaced} if replaced is not None else set())
            with suppress(OSError):
                _clean(directory, keep)
            log.info(
                "synced %s: model %s %s, run %s", directory, synced.name, synced.version, run.run_id
            )
            return SyncResult(directory, folder, manifest, changed=True)
    finally:
        if own and engine is not None:
            engine.dispose()
