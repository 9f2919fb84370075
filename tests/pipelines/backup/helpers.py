"""A populated database and registry, and checksums computed independently of the backup code."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import REAL, Engine, MetaData, insert, select, text

from pipelines.api_keys import ApiKeys
from pipelines.backup.location import BackupLocation
from pipelines.forecast.rows import RowContext
from pipelines.forecast.sql_sink import batch_writer, sql_sink, sql_target
from pipelines.ledger import IngestLedger, RunLedger
from pipelines.models.artefact_store import ArtefactStore
from pipelines.models.registry import ModelRegistry
from pipelines.storage import fsspec_options
from pipelines.verification import Verified, record
from schemas.config import StorageOptions
from schemas.forecast_tables import forecasts_staging
from schemas.settings import Settings
from schemas.tables import Base
from tests.fixtures.s3 import S3Server
from tests.pipelines.registry_helpers import build_model, record_evaluation

TABLES = (
    "runs",
    "ingest_files",
    "models",
    "skill_scores",
    "forecasts",
    "forecasts_staging",
    "verification_scores",
    "api_keys",
)
# Two initial times on one day, one on the next: two PostgreSQL day partitions per run.
INITS = np.array([1_577_836_800, 1_577_858_400, 1_577_923_200], dtype=np.int64)
LEADS = (6, 12)


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Bucket:
    """One moto bucket and a prefix in it."""

    server: S3Server
    name: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def objects(self) -> dict[str, str]:
        """Key -> sha256 of every object under the prefix."""
        client = self.server.client()
        listing = client.list_objects_v2(Bucket=self.name, Prefix=self.prefix + "/")
        return {
            obj["Key"]: hashlib.sha256(
                client.get_object(Bucket=self.name, Key=obj["Key"])["Body"].read()
            ).hexdigest()
            for obj in listing.get("Contents", [])
        }

    def delete_all(self) -> None:
        client = self.server.client()
        for key in self.objects():
            client.delete_object(Bucket=self.name, Key=key)


def new_bucket(server: S3Server, prefix: str) -> Bucket:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name)
    return Bucket(server, name, prefix)


def options(url: str) -> dict[str, Any]:
    """fsspec options for ``url`` from the environment (the moto server's)."""
    return fsspec_options(url, StorageOptions(), Settings())


def store_at(url: str) -> ArtefactStore:
    return ArtefactStore(url, options(url))


def location_at(url: str) -> BackupLocation:
    return BackupLocation(url, options(url))


def _forecast_run(engine: Engine, run_id: str, seed: int) -> None:
    target = sql_target(url_of(engine), run_id, uuid.uuid4().hex[:8])
    sink = sql_sink(target)
    sink.prepare(INITS)
    context = RowContext(
        run_id=run_id,
        model_sha256="ab" * 32,
        channels=(("t2m", None), ("t", 500)),
        lat=np.linspace(10.0, -10.0, 3),
        lon=np.linspace(-20.0, 20.0, 4, endpoint=False),
    )
    values = np.random.default_rng(seed).normal(280, 10, (3, len(LEADS), 2, 3, 4))
    values = values.astype(np.float32)
    values[0, 0, 0, 0, 0] = np.nan  # a NULL value
    writer = batch_writer(target, context)
    writer.write(INITS, LEADS, values)
    writer.close()
    sink.commit()


def populate(engine: Engine, registry_url: str, work: Path) -> None:
    """Rows in every table through the real pipelines, objects in the registry."""
    registry = ModelRegistry(engine, registry_url, options(registry_url), cache=work / "cache")
    for version, a in (("v1", 0.75), ("v2", 0.5)):
        path, card = build_model(work, version=version, a=a)
        registry.register(path)
        record_evaluation(engine, card)
    registry.promote("linear", "v2")
    registry.retire("linear", "v1")
    keys = ApiKeys(engine, cache_ttl_s=0)
    keys.create("acme-dashboard", 120)
    revoked, _ = keys.create("old-client")
    keys.revoke(revoked.key_id)
    runs = RunLedger(engine)
    ingest = runs.start("ingest", {"source": {"urls": ["data/*.grib"]}, "ratio": 0.1})
    IngestLedger(engine).mark_committed(
        ingest, "output/analysis.zarr", "data/a.grib", 1234, "etag:abc", "sha256:x", [0, 3600]
    )
    runs.finish(ingest, "succeeded", summary={"files": 1, "empty": None})
    runs.start("forecast", {"nested": {"b": [1, 2.5, None], "a": "é"}})  # left running
    for error in ("NA", "", 'a,"b"\nc'):  # text a CSV reader could take for NULL or split
        runs.finish(runs.start("train", {"error": error}), "failed", error=error)
    for seed, run_id in enumerate(("run-a", "run-b")):
        _forecast_run(engine, run_id, seed)
    start = datetime(2020, 1, 1, 6, tzinfo=UTC)
    scores = [
        Verified("t2m", lead, start, start + timedelta(hours=lead), 1.0 / lead, float("nan"), 12)
        for lead in LEADS
    ]
    record(engine, "run-a", "ab" * 32, scores)
    with engine.begin() as conn:  # a row of a SQLite forecast run in flight
        conn.execute(
            insert(forecasts_staging).values(
                attempt="f00d", run_id="run-c", model_sha256="cd" * 32, init_time=start,
                lead_hours=6, valid_time=start + timedelta(hours=6), variable="t2m",
                level=None, lat=1.5, lon=-2.25, value=281.5,
            )
        )  # fmt: skip


def _normal(value: Any, single: bool) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and single:  # REAL: PostgreSQL keeps float32, SQLite a double
        return repr(float(np.float32(value)))
    return repr(value)


def checksums(engine: Engine) -> dict[str, tuple[int, str]]:
    """Table -> (rows, sha256 of its rows as normalised text, sorted)."""
    found: dict[str, tuple[int, str]] = {}
    with engine.connect() as conn:
        for name in TABLES:
            table = Base.metadata.tables[name]
            single = [isinstance(c.type, REAL) for c in table.columns]
            rows = sorted(
                "|".join(_normal(v, s) for v, s in zip(row, single, strict=True))
                for row in conn.execute(select(table)).all()
            )
            found[name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return found


def drop_everything(engine: Engine) -> None:
    """Drop every table (PostgreSQL: the whole schema)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        else:
            meta = MetaData()
            meta.reflect(conn)
            meta.drop_all(conn)
    engine.dispose()
