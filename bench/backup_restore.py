"""``python -m bench.backup_restore``: ``climate backup`` / ``climate restore`` times (RPO, RTO).

Builds a seeded synthetic database (forecast rows of ``--runs`` runs on a 2.5-degree global
grid through the real forecast sink, plus ledger rows, API keys and registered models in a
local registry), then times, in one process:

- backup: ``run_backup`` (snapshot dump to Parquet, registry copy, sha256 of every file,
  upload, manifest) to ``--target`` (a local folder, or ``s3`` on a moto server started here);
- baseline: a plain copy of the same bytes (the finished backup's files) to the same target,
  and for SQLite a copy of the database file: what any backup of this data must at least pay;
- baseline: a raw read of every row (SQLite ``fetchall``, PostgreSQL ``COPY ... TO STDOUT``,
  what ``pg_dump`` does), no conversion, nothing written: the floor of any logical dump;
- restore: ``run_restore`` into an empty database (download, sha256 checks, schema, load in
  one transaction, read-back check of every table's digest, registry objects, migrate).

Prints a table and one JSON line. Figures are from this machine and this run only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from pipelines.api_keys import ApiKeys
from pipelines.backup.location import BackupLocation
from pipelines.backup.run import run_backup, run_restore
from pipelines.backup.snapshot import project_tables
from pipelines.db import make_engine, migrate
from pipelines.forecast.postgres_sink import conninfo
from pipelines.forecast.rows import RowContext
from pipelines.forecast.sql_sink import batch_writer, sql_sink, sql_target
from pipelines.ledger import RunLedger
from pipelines.models.artefact_store import ArtefactStore
from pipelines.models.registry import ModelRegistry
from pipelines.storage import fsspec_options
from schemas.config import StorageOptions
from schemas.settings import Settings
from tests.fixtures.s3 import start_moto_server
from tests.pipelines.registry_helpers import build_model

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
INIT0 = 1_577_836_800  # 2020-01-01T00:00Z
LEADS = tuple(range(6, 6 * 9, 6))  # 8 lead times
N_LAT, N_LON = 73, 144  # 2.5 degrees


def _pg_database() -> str:
    name = f"bench_backup_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _pg_drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        admin.execute(drop.format(sql.Identifier(name)))


def _populate(url: str, registry: str, work: Path, runs: int, seed: int) -> int:
    """Seeded rows in every table; returns the forecast rows written."""
    engine = make_engine(url)
    migrate(engine)
    models = ModelRegistry(engine, registry, cache=work / "cache")
    for version, a in (("v1", 0.75), ("v2", 0.5), ("v3", 0.25)):
        models.register(build_model(work, version=version, a=a)[0])
    keys = ApiKeys(engine, cache_ttl_s=0)
    for i in range(100):
        keys.create(f"client-{i}", 60 + i)
    ledger = RunLedger(engine)
    rng = np.random.default_rng(seed)
    inits = np.array([INIT0 + 6 * 3600 * k for k in range(2)], dtype=np.int64)
    rows = 0
    for r in range(runs):
        run_id = ledger.start("forecast", {"run": r, "leads": list(LEADS)})
        target = sql_target(url, run_id, uuid.uuid4().hex[:8])
        sink = sql_sink(target)
        sink.prepare(inits + r * 86_400)
        context = RowContext(
            run_id=run_id,
            model_sha256="ab" * 32,
            channels=(("t2m", None), ("t", 500)),
            lat=np.linspace(90.0, -90.0, N_LAT),
            lon=-180.0 + 2.5 * np.arange(N_LON),
        )
        shape = (len(inits), len(LEADS), 2, N_LAT, N_LON)
        values = rng.normal(280.0, 10.0, shape).astype(np.float32)
        writer = batch_writer(target, context)
        writer.write(inits + r * 86_400, LEADS, values)
        writer.close()
        rows += sink.commit()
        ledger.finish(run_id, "succeeded", summary={"rows": int(values.size)})
    engine.dispose()
    return rows


def _raw_read_baseline(url: str) -> float:
    """Seconds to read every row of every table, raw (SQLite: fetchall; PostgreSQL: COPY TO)."""
    tables = [t.name for t in project_tables()]
    start = time.perf_counter()
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for name in tables:
                conn.execute(f"SELECT * FROM {name}").fetchall()
    else:
        with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cursor:
            for name in tables:
                with cursor.copy(f"COPY (SELECT * FROM {name}) TO STDOUT") as copy:
                    for _ in copy:
                        pass
    return time.perf_counter() - start


def _copy_baseline(location: BackupLocation, name: str, staging: Path) -> float:
    """Seconds to write the backup's own files (downloaded first, not timed) to a new folder."""
    files = [p for p in (staging / "src").rglob("*") if p.is_file()]
    folder = f"baseline-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    for path in files:
        location.upload(path, folder, str(path.relative_to(staging / "src")))
    seconds = time.perf_counter() - start
    location.delete(folder)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--target", choices=["local", "s3"], default="local")
    parser.add_argument("--runs", type=int, default=3, help="forecast runs (336,384 rows each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-backup-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CLIMATE_CACHE_DIR"] = str(work / "cache")
    moto = None
    databases: list[str] = []
    try:
        if args.target == "s3":
            moto, endpoint = start_moto_server({})
            os.environ.update(
                S3_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_REGION="us-east-1",
            )
            import boto3

            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
                Bucket="backups"
            )
            target = "s3://backups/climate"
        else:
            target = str(work / "backups")
        if args.database == "postgresql":
            databases = [_pg_database(), _pg_database()]
            source_url, restore_url = (
                f"postgresql+psycopg://postgres@127.0.0.1:5432/{n}" for n in databases
            )
        else:
            source_url = f"sqlite:///{work / 'source.db'}"
            restore_url = f"sqlite:///{work / 'restored.db'}"
        registry = str(work / "registry")
        print(f"building the database ({args.runs} forecast runs) ...", flush=True)
        rows = _populate(source_url, registry, work, args.runs, args.seed)

        options = fsspec_options(target, StorageOptions(), Settings())
        location = BackupLocation(target, options)
        source = make_engine(source_url)
        start = time.perf_counter()
        report = run_backup(source, ArtefactStore(registry), location, keep=2)
        backup_s = time.perf_counter() - start
        source.dispose()

        staging = work / "baseline"
        manifest = location.read_manifest(report.name)
        for entry in manifest.files:
            location.fetch(report.name, entry.path, staging / "src" / entry.path)
        copy_s = _copy_baseline(location, report.name, staging)
        read_s = _raw_read_baseline(source_url)
        file_copy_s = None
        if args.database == "sqlite":
            start = time.perf_counter()
            shutil.copyfile(work / "source.db", work / "copy.db")
            file_copy_s = time.perf_counter() - start

        target_engine = make_engine(restore_url)
        start = time.perf_counter()
        restored = run_restore(
            target_engine, ArtefactStore(str(work / "registry-restored")), location
        )
        restore_s = time.perf_counter() - start
        target_engine.dispose()
        assert restored.rows == report.rows, "restored row counts differ"

        total_rows = sum(report.rows.values())
        result = {
            "database": args.database,
            "target": args.target,
            "rows": total_rows,
            "forecast_rows": rows,
            "registry_objects": report.objects,
            "backup_bytes": report.bytes,
            "backup_s": round(backup_s, 2),
            "restore_s": round(restore_s, 2),
            "baseline_copy_same_bytes_s": round(copy_s, 3),
            "baseline_raw_read_s": round(read_s, 2),
            "baseline_sqlite_file_copy_s": None if file_copy_s is None else round(file_copy_s, 3),
            "backup_vs_raw_read": round(backup_s / read_s, 1),
            "restore_vs_raw_read": round(restore_s / read_s, 1),
        }
        print(f"rows {total_rows:,} (forecasts {rows:,}), {report.objects} registry objects")
        print(f"backup        {backup_s:8.2f} s  {report.bytes / 1e6:8.1f} MB  to {args.target}")
        print(f"restore (RTO) {restore_s:8.2f} s  into an empty {args.database} database")
        print(f"baseline: raw read of every row  {read_s:8.2f} s")
        print(f"baseline: copy of the same {report.bytes / 1e6:.1f} MB  {copy_s:8.3f} s")
        if file_copy_s is not None:
            size = (work / "source.db").stat().st_size / 1e6
            print(f"baseline: SQLite file copy ({size:.1f} MB)   {file_copy_s:8.3f} s")
        print(
            f"backup / raw read {backup_s / read_s:.1f}x, restore / raw read "
            f"{restore_s / read_s:.1f}x; RPO = the interval between backups (the snapshot is "
            "taken at the backup's start), RTO = the restore time"
        )
        print(json.dumps(result))
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)
        for name in databases:
            _pg_drop(name)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
