"""Files that open but fail while their values are decoded (the write step decodes them): no
chunk of theirs is written, their neighbours go in, and a re-run with the fixed file completes
the store exactly as one clean run would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.helpers.synthetic import write_netcdf_files
from tests.pipelines.ingest.helpers import ingest, make_config, sqlite_engine

pytestmark = pytest.mark.usefixtures("ray_session")
TIMES = 24


def days(folder: Path, count: int) -> list[Path]:
    """``count`` zlib-compressed daily files of one coarse synthetic time series."""
    return write_netcdf_files(folder, count, TIMES, ("t2m",), seed=3, resolution=5.0, complevel=1)


def corrupt(path: Path) -> Path:
    """The file with bytes of its compressed data overwritten: it opens, but fails to decode."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = b"\xff" * 256
    damaged = path.with_name(f"damaged-{path.name}")
    damaged.write_bytes(bytes(data))
    xr.open_dataset(damaged).close()
    return damaged


def config_for(files: list[Path], store: Path, chunk: int = TIMES):  # type: ignore[no-untyped-def]
    return make_config(files, store, ["t2m"], kind="netcdf", chunks={"time": chunk})


def reference(files: list[Path], tmp_path: Path, chunk: int = TIMES) -> xr.Dataset:
    folder = tmp_path / "reference"
    folder.mkdir()
    summary = ingest(config_for(files, folder / "r.zarr", chunk), sqlite_engine(folder))
    assert summary.clean, summary.failures
    return xr.open_zarr(folder / "r.zarr").load()


@pytest.mark.parametrize("chunk", [TIMES, TIMES * 3 // 2], ids=["own-chunks", "shared-chunk"])
def test_failed_last_file_leaves_the_store_as_without_it(tmp_path: Path, chunk: int) -> None:
    good = days(tmp_path / "in", 3)
    bad = corrupt(good[2])
    engine = sqlite_engine(tmp_path)
    store = tmp_path / "s.zarr"
    summary = ingest(config_for([good[0], good[1], bad], store, chunk), engine)
    assert set(summary.failures) == {str(bad)}
    message = summary.failures[str(bad)]
    assert message.startswith(str(bad)) and "re-download" in message
    assert (summary.files_ingested, summary.times_added, summary.status) == (2, 48, "partial")
    np.testing.assert_array_equal(
        xr.open_zarr(store).t2m.values, reference(good[:2], tmp_path, chunk).t2m.values
    )


def test_failed_middle_file_is_filled_in_by_the_rerun(tmp_path: Path) -> None:
    good = days(tmp_path / "in", 3)
    bad = corrupt(good[1])
    engine = sqlite_engine(tmp_path)
    store = tmp_path / "s.zarr"
    first = ingest(config_for([good[0], bad, good[2]], store), engine)
    assert list(first.failures) == [str(bad)] and first.files_ingested == 2
    partial = xr.open_zarr(store).t2m.values
    assert partial.shape[0] == 3 * TIMES and np.isnan(partial[TIMES : 2 * TIMES]).all()
    bad.write_bytes(good[1].read_bytes())  # the file re-downloaded
    again = ingest(config_for([good[0], bad, good[2]], store), engine)
    assert again.clean and (again.files_skipped, again.files_ingested) == (2, 1)
    assert again.times_added == 0
    full = reference(good, tmp_path)
    np.testing.assert_array_equal(xr.open_zarr(store).t2m.values, full.t2m.values)
    np.testing.assert_array_equal(xr.open_zarr(store).time.values, full.time.values)


def test_two_files_agreeing_on_shared_times(tmp_path: Path) -> None:
    good = days(tmp_path / "in", 2)
    copy = tmp_path / "in" / "zz-copy.nc"
    copy.write_bytes(good[1].read_bytes())
    summary = ingest(config_for([*good, copy], tmp_path / "s.zarr"), sqlite_engine(tmp_path))
    assert summary.clean, summary.failures
    assert (summary.files_ingested, summary.files_unchanged, summary.times_added) == (2, 1, 48)
