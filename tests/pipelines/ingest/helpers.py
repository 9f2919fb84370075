"""Shared helpers of the ingest tests: build configs, run a real Ray ingest, read sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr
from sqlalchemy import Engine

from pipelines.canonical import normalise
from pipelines.db import make_engine, migrate
from pipelines.ingest.runner import IngestSummary, run_ingest
from pipelines.ray_data import RayDataExecutor
from pipelines.sources import reader_for
from schemas.config import IngestConfig
from schemas.settings import Settings


def make_config(
    urls: list[str | Path],
    store: str | Path,
    variables: list[str],
    kind: str = "grib",
    **source: Any,
) -> IngestConfig:
    chunks = source.pop("chunks", {"time": 48})
    run_id = source.pop("run_id", None)
    return IngestConfig.model_validate(
        {
            "source": {
                "kind": kind,
                "urls": [str(u) for u in urls],
                "variables": variables,
                **source,
            },
            "store": {"url": str(store), "chunks": chunks},
            "run_id": run_id,
        }
    )


def sqlite_engine(directory: Path) -> Engine:
    engine = make_engine(f"sqlite:///{directory / 'ledger.db'}")
    migrate(engine)
    return engine


def ingest(config: IngestConfig, engine: Engine, settings: Settings | None = None) -> IngestSummary:
    """One ingest through the real local Ray Data path."""
    return run_ingest(config, settings or Settings(), engine, RayDataExecutor(concurrency=2))


def direct_read(path: str | Path, config: IngestConfig) -> xr.Dataset:
    """The reference: the file read with xarray directly and normalised, fully loaded."""
    reader = reader_for(config.source)
    raw = reader.open(str(path), {})
    return normalise(raw, config.source, str(path)).load()
