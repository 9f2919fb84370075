"""``pipelines.sync``: a synced directory holds the promoted model, the committed run and the
key hashes, verified; syncs are idempotent, swap whole and never leave half a directory."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pytest
from sqlalchemy import Engine

from pipelines.api_keys import ApiKeys, ForbiddenError, UnauthorizedError
from pipelines.db import make_engine, migrate
from pipelines.errors import ConfigError, ModelError, StoreError
from pipelines.forecast.store import ForecastStore, open_forecast_store
from pipelines.models.artefacts import file_sha256
from pipelines.models.registry import ModelRegistry
from pipelines.sync import (
    CARD_FILE,
    KEYS_FILE,
    MANIFEST,
    MODEL_FILE,
    IncompleteSyncError,
    NothingToSyncError,
    SyncResult,
    sync_to,
    verify_sync,
)
from pipelines.sync.keys import keys_engine
from schemas.config import StorageOptions
from schemas.model_card import ModelCard
from schemas.model_source import ModelFile, RegistryModel
from schemas.settings import Settings
from tests.fixtures.s3 import S3Server
from tests.helpers.forecast_runs import write_run
from tests.pipelines.registry_helpers import build_model, record_evaluation

NAME = "edge-t2m"


@dataclass
class Source:
    """A registry with promoted versions and a forecast store with committed runs."""

    root: Path
    engine: Engine
    settings: Settings
    registry: ModelRegistry
    store: str
    storage: StorageOptions
    cards: dict[str, ModelCard]

    def promote(self, version: str, a: float = 0.75) -> ModelCard:
        path, card = build_model(self.root / "models", NAME, version, a)
        self.registry.register(path, card)
        record_evaluation(self.engine, card)
        self.registry.promote(NAME, version)
        self.cards[version] = card
        return card

    def commit(self, version: str, seed: int = 0) -> str:
        local = str(self.root / "local-forecast")
        if not self.store.startswith("s3://"):
            return write_run(self.store, self.cards[version], leads=6, seed=seed)
        run_id = write_run(local, self.cards[version], leads=6, seed=seed)  # then uploaded
        fs = fsspec.filesystem("s3", endpoint_url=self.settings.s3_endpoint_url)
        current = ForecastStore(local).current()
        assert current is not None
        fs.put(f"{local}/{current.path}", f"{self.store}/{current.path}", recursive=True)
        fs.pipe_file(f"{self.store}/CURRENT.json", Path(local, "CURRENT.json").read_bytes())
        return run_id

    def sync(
        self, target: Path, model: ModelFile | RegistryModel | None = None, keys: bool = True
    ) -> SyncResult:
        source = model or RegistryModel(name=NAME)
        return sync_to(target, self.store, source, self.settings, self.storage, keys=keys)


def _source(root: Path, database_url: str, registry_url: str, store: str, **env: str) -> Source:
    engine = make_engine(database_url)
    migrate(engine)
    settings = Settings(database_url=database_url, model_registry_url=registry_url, **env)
    registry = ModelRegistry.from_settings(engine, settings, cache=root / "cache")
    return Source(root, engine, settings, registry, store, StorageOptions(max_attempts=1), {})


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Source]:
    """SQLite and local folders."""
    url = f"sqlite:///{tmp_path / 'climate.db'}"
    source = _source(tmp_path, url, str(tmp_path / "registry"), str(tmp_path / "forecast"))
    yield source
    source.engine.dispose()


def _values(store: str | Path, **options: object) -> np.ndarray:
    return np.asarray(open_forecast_store(str(store), storage_options=options or None).t2m.values)


# -- what a sync holds -------------------------------------------------------------------------


def test_a_sync_holds_the_promoted_model_the_run_and_the_live_key_hashes(local: Source) -> None:
    local.promote("v1")
    card = local.promote("v2", a=0.5)  # the promoted one is synced
    run_id = local.commit("v2")
    keys = ApiKeys(local.engine, cache_ttl_s=0)
    live, live_key = keys.create("dashboard", rate_per_minute=7)
    gone, gone_key = keys.create("old-client")
    keys.revoke(gone.key_id)

    target = local.root / "edge"
    result = local.sync(target)
    assert result.changed and target.is_symlink()
    manifest = verify_sync(target)
    assert (manifest.model.name, manifest.model.version) == (NAME, "v2")
    assert manifest.run.run_id == run_id and manifest.keys == 1
    assert file_sha256(target / MODEL_FILE) == card.sha256
    assert ModelCard.read(target / CARD_FILE) == card
    np.testing.assert_array_equal(_values(target / "forecast"), _values(local.store))
    committed = ForecastStore(local.store).current()
    assert ForecastStore(str(target / "forecast")).current() == committed

    text = (target / KEYS_FILE).read_text()
    assert live.key_id in text and gone.key_id not in text
    assert live_key.split("_")[-1] not in text  # hashes only: no secret travels
    offline = ApiKeys(keys_engine(target / KEYS_FILE))
    record = offline.verify(live_key)
    assert (record.key_id, record.name, record.rate_per_minute) == (live.key_id, "dashboard", 7)
    with pytest.raises(UnauthorizedError):
        offline.verify(gone_key)  # revoked before the sync: not shipped
    with pytest.raises(ForbiddenError):
        ApiKeys(local.engine).verify(gone_key)  # (online it is known and revoked)


def test_without_keys_no_key_file_is_written(local: Source) -> None:
    local.promote("v1")
    local.commit("v1")
    local.sync(local.root / "edge", keys=False)
    manifest = verify_sync(local.root / "edge")
    assert manifest.keys is None and not (local.root / "edge" / KEYS_FILE).exists()


def test_a_model_file_source_is_synced_without_a_registry(local: Source) -> None:
    path, card = build_model(local.root / "files", "filed", "f1")
    local.cards["f1"] = card
    local.commit("f1")
    local.sync(local.root / "edge", model=ModelFile(path=str(path)), keys=False)
    assert verify_sync(local.root / "edge").model.sha256 == card.sha256


# -- idempotent, whole, atomic -----------------------------------------------------------------


def test_syncing_again_unchanged_copies_nothing(local: Source) -> None:
    local.promote("v1")
    local.commit("v1")
    target = local.root / "edge"
    first = local.sync(target)
    stamp = (target / MANIFEST).stat().st_mtime_ns
    again = local.sync(target)
    assert not again.changed
    assert again.target == first.target
    assert (target / MANIFEST).stat().st_mtime_ns == stamp

    ApiKeys(local.engine).create("new-client")  # keys changed: a new sync, the rest linked
    third = local.sync(target)
    assert third.changed and third.target != first.target
    assert third.manifest.keys == 1
    old_model = first.target / MODEL_FILE
    assert (target / MODEL_FILE).stat().st_ino == old_model.stat().st_ino  # linked, not copied


def test_a_newer_run_is_swapped_in_whole_while_readers_look(local: Source) -> None:
    local.promote("v1")
    local.commit("v1", seed=1)
    target = local.root / "edge"
    first = local.sync(target).target
    new_run = local.commit("v1", seed=2)

    seen: set[str] = set()
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                name = os.readlink(target)
            except OSError as exc:
                problems.append(f"DIR unreadable: {exc}")
                continue
            seen.add(name)
            if not (local.root / name / MANIFEST).is_file():
                problems.append(f"{name} has no manifest")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        second = local.sync(target)
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert second.changed and verify_sync(target).run.run_id == new_run
    assert seen <= {first.name, second.target.name}
    assert first.is_dir()  # the previous sync is kept for readers that opened it ...
    np.testing.assert_array_equal(_values(target / "forecast"), _values(local.store))

    local.commit("v1", seed=3)
    local.sync(target)
    assert not first.exists()  # ... until the next one
    leftovers = sorted(p.name for p in local.root.iterdir() if p.name.startswith(".edge."))
    assert len([n for n in leftovers if not n.endswith(".lock")]) == 2  # current and previous


def test_a_failed_sync_leaves_the_directory_as_it_was(local: Source) -> None:
    local.promote("v1")
    local.commit("v1")
    target = local.root / "edge"
    before = local.sync(target).target
    card = local.promote("v2", a=0.4)
    stored = local.root / "registry" / NAME / "v2" / "model.onnx"
    stored.write_bytes(stored.read_bytes()[:-10])  # the registry's file no longer matches
    with pytest.raises(ModelError, match="corrupted"):
        local.sync(target)
    assert os.readlink(target) == before.name
    assert verify_sync(target).model.version == "v1"
    assert not [p for p in local.root.iterdir() if p.name.endswith(".partial")]
    assert card.version == "v2"


# -- refusals ----------------------------------------------------------------------------------


def test_nothing_to_sync_and_bad_targets_are_refused(local: Source, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no promoted version"):
        local.sync(tmp_path / "edge")
    local.promote("v1")
    with pytest.raises(NothingToSyncError, match="no committed forecast run"):
        local.sync(tmp_path / "edge")
    local.commit("v1")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        local.sync(busy)
    linked = tmp_path / "linked"
    linked.symlink_to(busy)
    with pytest.raises(ConfigError, match="holds other files"):
        local.sync(linked)
    assert (busy / "notes.txt").read_text() == "mine" and linked.resolve() == busy
    assert not (tmp_path / "edge").exists()


def test_an_unreachable_store_is_named(local: Source, tmp_path: Path) -> None:
    from tests.fixtures.s3 import free_port

    local.promote("v1")
    local.settings = local.settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    local.store = "s3://nowhere/forecast"
    with pytest.raises(StoreError, match="s3://nowhere/forecast"):
        local.sync(tmp_path / "edge", keys=False)


def test_an_incomplete_or_changed_sync_is_refused(local: Source) -> None:
    local.promote("v1")
    local.commit("v1")
    target = local.root / "edge"
    folder = local.sync(target).target

    runs = target / "forecast" / "runs"
    chunk = next(p for p in runs.rglob("*") if p.parent.name == "t2m" and p.name[0] != ".")
    original = chunk.read_bytes()
    chunk.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(IncompleteSyncError, match=r"t2m/[0-9.]+ changed since it was synced"):
        verify_sync(target)
    chunk.write_bytes(original)
    verify_sync(target)

    (folder / KEYS_FILE).unlink()
    with pytest.raises(IncompleteSyncError, match=r"keys\.json is missing"):
        verify_sync(target)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["../outside"] = manifest["files"][MODEL_FILE]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IncompleteSyncError, match="outside the directory"):
        verify_sync(target)
    (folder / MANIFEST).unlink()
    with pytest.raises(IncompleteSyncError, match=r"no sync\.json"):
        verify_sync(target)
    with pytest.raises(IncompleteSyncError, match="no such directory"):
        verify_sync(local.root / "nowhere")

    local.sync(target)  # a damaged sync is replaced by a fresh one
    verify_sync(target)


# -- from object storage -----------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.db
def test_a_sync_from_s3_and_postgresql(s3_env: S3Server, postgres_url: str, tmp_path: Path) -> None:
    s3_env.client().create_bucket(Bucket="edge-src")
    endpoint = s3_env.endpoint_url
    source = _source(
        tmp_path,
        postgres_url,
        "s3://edge-src/registry",
        "s3://edge-src/forecast",
        s3_endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        card = source.promote("v1")
        run_id = source.commit("v1")
        target = tmp_path / "edge"
        source.sync(target)
        manifest = verify_sync(target)
        assert manifest.run.run_id == run_id and manifest.run.source == "s3://edge-src/forecast"
        assert manifest.model.sha256 == card.sha256 == file_sha256(target / MODEL_FILE)
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        np.testing.assert_array_equal(
            _values(target / "forecast"), _values("s3://edge-src/forecast", **options)
        )
        assert not source.sync(target).changed
    finally:
        source.engine.dispose()
