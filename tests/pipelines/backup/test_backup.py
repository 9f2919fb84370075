"""Backup, drop everything, restore: equal rows and bytes on SQLite and PostgreSQL, registry and
backups on the moto S3 server; damaged backups are refused and change nothing; retention."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pipelines.api_keys import ApiKeys
from pipelines.backup.errors import BackupRefusedError
from pipelines.backup.manifest import MANIFEST_NAME, load_manifest
from pipelines.backup.run import run_backup, run_restore
from pipelines.backup.snapshot import project_tables, snapshot
from pipelines.db import make_engine, migrate
from pipelines.errors import ConfigError
from pipelines.models.registry import ModelRegistry
from tests.fixtures.s3 import S3Server
from tests.pipelines.backup.helpers import (
    TABLES,
    Bucket,
    checksums,
    drop_everything,
    location_at,
    new_bucket,
    options,
    populate,
    store_at,
)
from tests.pipelines.registry_helpers import build_model

pytestmark = pytest.mark.s3


@pytest.fixture
def registry(s3_env: S3Server) -> Bucket:
    return new_bucket(s3_env, "registry")


@pytest.fixture
def backups(s3_env: S3Server) -> Bucket:
    return new_bucket(s3_env, "backups")


@pytest.fixture
def source(database_url: str, registry: Bucket, tmp_path: Path) -> Engine:
    engine = make_engine(database_url)
    migrate(engine)
    populate(engine, registry.url, tmp_path)
    return engine


def test_backup_drop_everything_restore(
    source: Engine, registry: Bucket, backups: Bucket, tmp_path: Path
) -> None:
    tables, objects = checksums(source), registry.objects()
    assert all(tables[name][0] > 0 for name in TABLES), tables  # every table has rows
    assert len(objects) == 4  # two versions: ONNX file and card each

    report = run_backup(source, store_at(registry.url), location_at(backups.url), keep=3)
    assert report.rows == {name: rows for name, (rows, _) in tables.items()}
    assert report.objects == 4
    stored = backups.objects()
    manifest_key = f"backups/{report.name}/{MANIFEST_NAME}"
    assert manifest_key in stored
    manifest = load_manifest(
        backups.server.client().get_object(Bucket=backups.name, Key=manifest_key)["Body"].read(),
        manifest_key,
    )
    assert manifest.database.kind == source.dialect.name
    assert manifest.database.revision == "0005_api_keys"
    for entry in manifest.files:  # every file listed with the sha256 of its stored bytes
        assert stored[f"backups/{report.name}/{entry.path}"] == entry.sha256
    assert {f"registry/{k}" for k in manifest.registry_objects} <= {f.path for f in manifest.files}

    drop_everything(source)
    registry.delete_all()
    assert registry.objects() == {}

    restored = run_restore(source, store_at(registry.url), location_at(backups.url))
    assert restored.name == report.name and restored.objects_written == 4
    assert restored.artefact_urls_rewritten == 0
    assert checksums(source) == tables
    assert registry.objects() == objects

    # The restored database works: ids continue after the restored ones, models load.
    record, _ = ApiKeys(source, cache_ttl_s=0).create("after-restore")
    assert record.key_id
    fetched, card = ModelRegistry(
        source, registry.url, options(registry.url), cache=tmp_path / "cache2"
    ).fetch("linear")
    assert card.version == "v2" and fetched.exists()
    path, _ = build_model(tmp_path, version="v3", a=0.25)
    ModelRegistry(source, registry.url, options(registry.url)).register(path)


@pytest.mark.db
def test_sqlite_backup_restores_into_postgresql(
    registry: Bucket,
    backups: Bucket,
    tmp_path: Path,
    postgres_database_factory: Callable[[], str],
) -> None:
    sqlite = make_engine(f"sqlite:///{tmp_path / 'climate.db'}")
    migrate(sqlite)
    populate(sqlite, registry.url, tmp_path)
    run_backup(sqlite, store_at(registry.url), location_at(backups.url), keep=1)
    other = new_bucket(registry.server, "moved")  # a new registry bucket as well

    target = make_engine(postgres_database_factory())
    report = run_restore(target, store_at(other.url), location_at(backups.url))
    assert report.artefact_urls_rewritten == 2
    before, after = checksums(sqlite), checksums(target)
    assert {k: v for k, v in after.items() if k != "models"} == {
        k: v for k, v in before.items() if k != "models"
    }
    assert after["models"][0] == before["models"][0]
    assert sorted(other.objects().values()) == sorted(registry.objects().values())
    # The rows point at the new registry, whose files verify against them.
    fetched, card = ModelRegistry(
        target, other.url, options(other.url), cache=tmp_path / "cache2"
    ).fetch("linear")
    assert card.version == "v2" and fetched.exists()


def _flip_table(bucket: Bucket, name: str) -> None:
    key = f"backups/{name}/db/api_keys.parquet"
    _rewrite(bucket, key, lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])


def _flip_object(bucket: Bucket, name: str) -> None:
    key = f"backups/{name}/registry/linear/v2/model.onnx"
    _rewrite(bucket, key, lambda data: data[:-1] + bytes([data[-1] ^ 0x01]))


def _delete_dump(bucket: Bucket, name: str) -> None:
    bucket.server.client().delete_object(Bucket=bucket.name, Key=f"backups/{name}/db/runs.parquet")


def _delete_manifest(bucket: Bucket, name: str) -> None:
    bucket.server.client().delete_object(Bucket=bucket.name, Key=f"backups/{name}/{MANIFEST_NAME}")


def _edit_manifest(bucket: Bucket, name: str) -> None:
    def more_rows(data: bytes) -> bytes:
        manifest = json.loads(data)
        manifest["tables"][0]["rows"] += 1
        return json.dumps(manifest).encode()

    _rewrite(bucket, f"backups/{name}/{MANIFEST_NAME}", more_rows)


def _rewrite(bucket: Bucket, key: str, change: Callable[[bytes], bytes]) -> None:
    client = bucket.server.client()
    data = client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    client.put_object(Bucket=bucket.name, Key=key, Body=change(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_flip_table, r"db/api_keys.parquet has \d+ bytes, sha256 [0-9a-f]{64}; the manifest"),
        (_flip_object, r"registry/linear/v2/model.onnx has \d+ bytes, sha256"),
        (_delete_dump, r"is missing .*db/runs.parquet"),
        (_delete_manifest, r"has no manifest.json: it is incomplete"),
        (_edit_manifest, r"checksum does not match its content"),
    ],
    ids=["flipped-table-byte", "flipped-object-byte", "deleted-dump", "no-manifest", "edited"],
)
def test_a_damaged_backup_is_refused_and_nothing_changes(
    source: Engine,
    registry: Bucket,
    backups: Bucket,
    tmp_path: Path,
    damage: Callable[[Bucket, str], None],
    message: str,
) -> None:
    report = run_backup(source, store_at(registry.url), location_at(backups.url), keep=2)
    # The target has moved on since the backup: a new key and a new model version.
    ApiKeys(source, cache_ttl_s=0).create("newer")
    path, _ = build_model(tmp_path, version="v9", a=0.1)
    ModelRegistry(source, registry.url, options(registry.url)).register(path)
    tables, objects = checksums(source), registry.objects()

    damage(backups, report.name)
    with pytest.raises(BackupRefusedError, match=message):
        run_restore(
            source, store_at(registry.url), location_at(backups.url), report.name, force=True
        )
    assert checksums(source) == tables
    assert registry.objects() == objects


def test_a_non_empty_database_needs_force(
    source: Engine, registry: Bucket, backups: Bucket
) -> None:
    run_backup(source, store_at(registry.url), location_at(backups.url), keep=2)
    tables = checksums(source)
    ApiKeys(source, cache_ttl_s=0).create("newer")
    changed = checksums(source)

    with pytest.raises(BackupRefusedError, match=r"is not empty: api_keys \(3 rows\).*--force"):
        run_restore(source, store_at(registry.url), location_at(backups.url))
    assert checksums(source) == changed

    report = run_restore(source, store_at(registry.url), location_at(backups.url), force=True)
    assert report.objects_written == 0 and report.objects_unchanged == 4  # same bytes there
    assert checksums(source) == tables


def test_retention_keeps_the_newest_complete_backups(
    s3_env: S3Server, backups: Bucket, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'climate.db'}")
    migrate(engine)
    ApiKeys(engine, cache_ttl_s=0).create("one")
    store, location = store_at(f"s3://{backups.name}/empty-registry"), location_at(backups.url)
    # A leftover of an interrupted backup, older than any complete one.
    location.write_bytes("20000101T000000.000000Z", "db/runs.parquet", b"partial")
    names = [run_backup(engine, store, location, keep=2).name for _ in range(3)]
    listing = location.listing()
    assert listing.complete == names[1:]
    assert listing.incomplete == []

    # A newer incomplete backup is ignored by `latest` and kept (it may still be written).
    location.write_bytes("29991231T235959.000000Z", "db/runs.parquet", b"partial")
    assert run_backup(engine, store, location, keep=2).deleted == [names[1]]
    assert "29991231T235959.000000Z" in location.listing().incomplete
    drop_everything(engine)
    report = run_restore(engine, store, location)
    assert report.name == location.listing().complete[-1]
    assert report.rows["api_keys"] == 1

    with pytest.raises(ConfigError, match="keep at least 1"):
        run_backup(engine, store, location, keep=0)
    with pytest.raises(ConfigError, match=r"no backup '2001' at .*pass --backup latest"):
        run_restore(engine, store, location, "2001")
    with pytest.raises(ConfigError, match="no complete backup at"):
        run_restore(engine, store, location_at(f"s3://{backups.name}/nothing-here"))


def test_writers_go_on_during_the_snapshot(engine: Engine) -> None:
    keys = ApiKeys(engine, cache_ttl_s=0)
    keys.create("before")
    count = text("SELECT count(*) FROM api_keys")
    with snapshot(engine, project_tables()) as conn:
        assert conn.execute(count).scalar_one() == 1
        keys.create("during")  # a writer is not blocked by the open snapshot
        assert conn.execute(count).scalar_one() == 1  # the snapshot does not see it
    with engine.connect() as conn:
        assert conn.execute(count).scalar_one() == 2


def test_an_empty_database_round_trips(engine: Engine, tmp_path: Path) -> None:
    store, location = store_at(str(tmp_path / "registry")), location_at(str(tmp_path / "b"))
    report = run_backup(engine, store, location, keep=1)
    assert set(report.rows) == set(TABLES) and sum(report.rows.values()) == 0
    assert report.objects == 0
    drop_everything(engine)
    restored = run_restore(engine, store, location)
    assert restored.rows == report.rows
    assert {name: rows for name, (rows, _) in checksums(engine).items()} == dict.fromkeys(TABLES, 0)
