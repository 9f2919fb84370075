"""The analysis store's region writes and axis truncation, on a tiny local store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from pipelines.analysis_store import AnalysisStore, from_seconds
from pipelines.canonical import GridSignature
from pipelines.store_layout import StoreLayout, VariableLayout
from schemas.config import ChunkSpec, Compression

LAT, LON = (10.0, 0.0, -10.0), (-180.0, -90.0, 0.0, 90.0)


def new_store(path: Path, times: int) -> AnalysisStore:
    layout = StoreLayout(
        GridSignature(lat=LAT, lon=LON, level=(), member=()),
        (VariableLayout("t2m", ("time", "lat", "lon"), {"units": "K"}),),
        {},
    )
    store = AnalysisStore(str(path))
    chunks = ChunkSpec.model_validate({"time": 2, "lat": 2, "lon": 2})
    store.create(layout, from_seconds(np.arange(times) * 3600), chunks, Compression())
    return store


def chunk_files(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "t2m").iterdir() if not p.name.startswith("."))


def test_all_missing_chunks_are_not_written(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s.zarr", 4)
    values = np.arange(4 * 3 * 4, dtype="float32").reshape(4, 3, 4)
    values[2:, :2, :2] = np.nan  # chunk (1, 0, 0) all missing
    values[0, 0, 0] = np.nan  # chunk (0, 0, 0) starts with a missing value, rest present
    store.write({"t2m": values}, 0)
    assert "1.0.0" not in chunk_files(tmp_path / "s.zarr")
    assert len(chunk_files(tmp_path / "s.zarr")) == 2 * 2 * 2 - 1
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "s.zarr").t2m.values, values)


def test_truncate_resets_the_rest_of_the_last_chunk(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s.zarr", 6)
    store.write({"t2m": np.ones((6, 3, 4), dtype="float32")}, 0)
    store.truncate(3)
    assert xr.open_zarr(tmp_path / "s.zarr").sizes["time"] == 3
    assert not any(name.startswith("2.") for name in chunk_files(tmp_path / "s.zarr"))
    store.extend(from_seconds(np.arange(4) * 3600))
    grown = xr.open_zarr(tmp_path / "s.zarr").t2m.values
    assert np.isnan(grown[3]).all() and (grown[:3] == 1).all()
