"""Ingest of every format through the real Ray Data path equals a direct read, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.pipelines.ingest.helpers import direct_read, ingest, make_config, sqlite_engine

pytestmark = pytest.mark.usefixtures("ray_session")


def test_sample_grib_equals_direct_read(sample_grib: Path, tmp_path: Path) -> None:
    config = make_config([sample_grib], tmp_path / "a.zarr", ["t2m"])
    summary = ingest(config, sqlite_engine(tmp_path))
    assert summary.clean, summary.failures
    assert (summary.files_ingested, summary.times_added) == (1, 744)
    store = xr.open_zarr(tmp_path / "a.zarr")
    expected = direct_read(sample_grib, config)
    xr.testing.assert_identical(store.t2m.load().drop_encoding(), expected.t2m.drop_encoding())
    assert store.t2m.dims == ("time", "lat", "lon")
    assert store.t2m.dtype == np.float32
    assert store.lat.values[0] > store.lat.values[-1], "latitude must be descending"
    assert store.t2m.attrs["units"] == "K"
    assert store.t2m.encoding["chunks"] == (48, 33, 49)
    assert (tmp_path / "a.zarr" / ".zmetadata").exists(), "metadata must be consolidated"


def test_levels_and_members(test_data: Path, tmp_path: Path) -> None:
    path = test_data / "era5-levels-members.grib"
    config = make_config([path], tmp_path / "m.zarr", ["z", "t"], chunks={"time": 2})
    summary = ingest(config, sqlite_engine(tmp_path))
    assert summary.clean, summary.failures
    store = xr.open_zarr(tmp_path / "m.zarr").load()
    expected = direct_read(path, config)
    assert store.t.dims == ("time", "level", "member", "lat", "lon")
    assert list(store.level.values) == [500, 850]
    assert store.lon.values.min() == -180.0 and store.lon.values.max() < 180.0
    for name in ("z", "t"):
        np.testing.assert_array_equal(store[name].values, expected[name].values)


def test_missing_values_become_nan(test_data: Path, tmp_path: Path) -> None:
    path = test_data / "fields_with_missing_values.grib"
    config = make_config([path], tmp_path / "nan.zarr", ["t2m"])
    assert ingest(config, sqlite_engine(tmp_path)).clean
    store = xr.open_zarr(tmp_path / "nan.zarr").load()
    raw = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})
    assert int(store.t2m.isnull().sum()) == int(raw.t2m.isnull().sum()) > 0
    np.testing.assert_array_equal(store.t2m.values, direct_read(path, config).t2m.values)


def test_netcdf_with_extra_dimension_and_fixed_times(test_data: Path, tmp_path: Path) -> None:
    path = test_data / "eraint_uvz.nc"
    engine = sqlite_engine(tmp_path)
    store_url = tmp_path / "eraint.zarr"
    for month, when in ((1, "1990-01-15T00:00:00"), (7, "1990-07-15T00:00:00")):
        config = make_config(
            [path],
            store_url,
            ["z", "u", "v"],
            kind="netcdf",
            select={"month": month},
            fixed_time=when,
            chunks={"time": 1, "lat": 128, "lon": 128},
        )
        summary = ingest(config, engine)
        assert summary.clean, summary.failures
    store = xr.open_zarr(store_url).load()
    assert list(store.time.values) == [np.datetime64("1990-01-15"), np.datetime64("1990-07-15")]
    assert store.z.dims == ("time", "level", "lat", "lon")
    raw = xr.open_dataset(path)
    july = raw.z.sel(month=7).values.astype("float32")
    np.testing.assert_array_equal(store.z.isel(time=1).values, july)


def test_netcdf_in_other_orientation_is_normalised(sample_grib: Path, tmp_path: Path) -> None:
    """Latitude ascending and longitude in [0, 360) come out as the canonical grid."""
    raw = xr.open_dataset(sample_grib, engine="cfgrib", backend_kwargs={"indexpath": ""})
    flipped = raw[["t2m"]].isel(time=slice(0, 30)).sortby("latitude")
    flipped = flipped.assign_coords(longitude=(flipped.longitude % 360)).sortby("longitude")
    flipped = flipped.drop_vars(["number", "step", "surface", "valid_time"])
    flipped.to_netcdf(tmp_path / "flipped.nc")
    config = make_config([tmp_path / "flipped.nc"], tmp_path / "f.zarr", ["t2m"], kind="netcdf")
    assert ingest(config, sqlite_engine(tmp_path)).clean
    store = xr.open_zarr(tmp_path / "f.zarr").load()
    np.testing.assert_array_equal(store.t2m.values, raw.t2m.values[:30].astype("float32"))
    np.testing.assert_array_equal(store.lon.values, raw.longitude.values)


def test_zarr_source(sample_grib: Path, tmp_path: Path) -> None:
    raw = xr.open_dataset(sample_grib, engine="cfgrib", backend_kwargs={"indexpath": ""})
    raw[["t2m"]].isel(time=slice(0, 50)).drop_vars(["number", "step", "surface"]).to_zarr(
        tmp_path / "source.zarr", zarr_format=2, consolidated=True
    )
    config = make_config([tmp_path / "source.zarr"], tmp_path / "z.zarr", ["t2m"], kind="zarr")
    summary = ingest(config, sqlite_engine(tmp_path))
    assert summary.clean, summary.failures
    store = xr.open_zarr(tmp_path / "z.zarr").load()
    np.testing.assert_array_equal(store.t2m.values, raw.t2m.values[:50].astype("float32"))
