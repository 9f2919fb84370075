"""Appending, re-ingesting and conflicting data: a store only ever changes for new times."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from sqlalchemy import Engine

from pipelines.db import make_engine, migrate
from pipelines.ledger import IngestLedger
from tests.pipelines.ingest.helpers import ingest, make_config, sqlite_engine

pytestmark = pytest.mark.usefixtures("ray_session")


def store_digest(path: Path) -> str:
    """Hash of every file of a store (names and bytes): equal digests, identical stores."""
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode() + item.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def weeks(sample_grib: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The sample split into NetCDF files of 10 days, 10 days and the rest."""
    folder = tmp_path_factory.mktemp("weeks")
    raw = xr.open_dataset(sample_grib, engine="cfgrib", backend_kwargs={"indexpath": ""})
    raw = raw[["t2m"]].drop_vars(["number", "step", "surface", "valid_time"]).load()
    paths = []
    for index, part in enumerate((slice(0, 240), slice(240, 480), slice(480, None))):
        path = folder / f"part{index}.nc"
        raw.isel(time=part).to_netcdf(path)
        paths.append(path)
    return paths


def test_append_then_reingest_changes_nothing(
    weeks: list[Path], sample_grib: Path, tmp_path: Path
) -> None:
    engine = sqlite_engine(tmp_path)
    store = tmp_path / "store.zarr"
    first = ingest(make_config(weeks[:1], store, ["t2m"], kind="netcdf"), engine)
    assert (first.files_ingested, first.times_added) == (1, 240)
    every_part = str(weeks[0].parent / "part*.nc")
    second = ingest(make_config([every_part], store, ["t2m"], kind="netcdf"), engine)
    assert second.clean, second.failures
    assert (second.files_skipped, second.files_ingested, second.times_added) == (1, 2, 504)
    full = xr.open_zarr(store).load()
    raw = xr.open_dataset(sample_grib, engine="cfgrib", backend_kwargs={"indexpath": ""})
    np.testing.assert_array_equal(full.t2m.values, raw.t2m.values.astype("float32"))
    before = store_digest(store)
    again = ingest(make_config(weeks, store, ["t2m"], kind="netcdf"), engine)
    assert again.clean and (again.files_skipped, again.times_added) == (3, 0)
    assert store_digest(store) == before


def test_copy_of_ingested_file_is_unchanged_not_duplicated(
    weeks: list[Path], tmp_path: Path
) -> None:
    engine = sqlite_engine(tmp_path)
    store = tmp_path / "store.zarr"
    ingest(make_config(weeks[:1], store, ["t2m"], kind="netcdf"), engine)
    before = store_digest(store)
    copy = tmp_path / "copy.nc"
    copy.write_bytes(weeks[0].read_bytes())
    summary = ingest(make_config([copy], store, ["t2m"], kind="netcdf"), engine)
    assert summary.clean, summary.failures
    assert (summary.files_unchanged, summary.times_added) == (1, 0)
    assert store_digest(store) == before
    assert xr.open_zarr(store).sizes["time"] == 240


def test_other_values_at_same_time_are_refused(weeks: list[Path], tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    store = tmp_path / "store.zarr"
    ingest(make_config(weeks[:1], store, ["t2m"], kind="netcdf"), engine)
    before = store_digest(store)
    changed = xr.open_dataset(weeks[0]).load()
    changed["t2m"] = changed.t2m + 0.5
    changed.to_netcdf(tmp_path / "warmer.nc")
    summary = ingest(make_config([tmp_path / "warmer.nc"], store, ["t2m"], kind="netcdf"), engine)
    message = summary.failures[str(tmp_path / "warmer.nc")]
    assert "differs from what the store already holds" in message
    assert "max |difference| 0.5" in message
    assert store_digest(store) == before


def test_two_files_disagreeing_in_one_run(weeks: list[Path], tmp_path: Path) -> None:
    """The first file by URL wins; the other is refused whole."""
    engine = sqlite_engine(tmp_path)
    original = tmp_path / "a-original.nc"
    original.write_bytes(weeks[0].read_bytes())
    changed = xr.open_dataset(weeks[0]).load()
    changed["t2m"] = changed.t2m - 1.0
    changed.to_netcdf(tmp_path / "z-colder.nc")
    config = make_config(
        [original, tmp_path / "z-colder.nc"], tmp_path / "s.zarr", ["t2m"], kind="netcdf"
    )
    summary = ingest(config, engine)
    assert list(summary.failures) == [str(tmp_path / "z-colder.nc")]
    assert "with other values" in summary.failures[str(tmp_path / "z-colder.nc")]
    assert summary.files_ingested == 1
    np.testing.assert_array_equal(
        xr.open_zarr(tmp_path / "s.zarr").t2m.values, xr.open_dataset(weeks[0]).t2m.values
    )


def test_other_grid_is_refused(weeks: list[Path], tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    store = tmp_path / "store.zarr"
    ingest(make_config(weeks[:1], store, ["t2m"], kind="netcdf"), engine)
    before = store_digest(store)
    coarse = xr.open_dataset(weeks[1]).isel(latitude=slice(None, None, 2)).load()
    coarse.to_netcdf(tmp_path / "coarse.nc")
    summary = ingest(make_config([tmp_path / "coarse.nc"], store, ["t2m"], kind="netcdf"), engine)
    assert "grid does not match the store" in summary.failures[str(tmp_path / "coarse.nc")]
    assert store_digest(store) == before


def test_times_before_the_store_end_are_refused(weeks: list[Path], tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    store = tmp_path / "store.zarr"
    ingest(make_config(weeks[1:2], store, ["t2m"], kind="netcdf"), engine)
    summary = ingest(make_config(weeks[:1], store, ["t2m"], kind="netcdf"), engine)
    assert "a store only grows at its end" in summary.failures[str(weeks[0])]
    assert xr.open_zarr(store).sizes["time"] == 240


@pytest.mark.db
def test_ledger_in_postgresql(
    weeks: list[Path], tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> None:
    engine: Engine = make_engine(postgres_database_factory())
    migrate(engine)
    store = tmp_path / "store.zarr"
    summary = ingest(make_config(weeks[:2], store, ["t2m"], kind="netcdf"), engine)
    assert summary.clean and summary.files_ingested == 2
    ledger = IngestLedger(engine)
    assert len(ledger.committed(str(store))) == 2
    assert len(ledger.committed_times(str(store))) == 480
    again = ingest(make_config(weeks[:2], store, ["t2m"], kind="netcdf"), engine)
    assert again.files_skipped == 2 and again.times_added == 0
    engine.dispose()
