"""The seeded synthetic generator: deterministic, split-invariant, realistic and smooth."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipelines.canonical import normalise
from schemas.config import NetcdfSource
from tests.helpers.synthetic import regular_grid, synthetic_dataset, write_netcdf_files

SMALL = {"lat": 37, "lon": 72}  # 5 degrees


def test_same_seed_same_values_other_seed_other_values() -> None:
    a = synthetic_dataset(6, ("t2m", "msl"), seed=3, **SMALL)
    b = synthetic_dataset(6, ("t2m", "msl"), seed=3, **SMALL)
    c = synthetic_dataset(6, ("t2m", "msl"), seed=4, **SMALL)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.t2m.values, c.t2m.values)


def test_values_do_not_depend_on_how_times_are_split() -> None:
    whole = synthetic_dataset(10, ("t2m", "u10"), seed=7, start="2021-06-30T20:00", **SMALL)
    second = synthetic_dataset(5, ("t2m", "u10"), seed=7, start="2021-07-01T01:00", **SMALL)
    xr.testing.assert_identical(whole.isel(time=slice(5, 10)), second)
    picked = synthetic_dataset(
        pd.DatetimeIndex(whole.time.values[[8, 2]]), ("t2m",), seed=7, **SMALL
    )
    np.testing.assert_array_equal(picked.t2m.values, whole.t2m.values[[8, 2]])


def test_two_files_of_five_equal_one_file_of_ten(tmp_path: Path) -> None:
    kwargs = {"seed": 11, "lat": 19, "lon": 36, "start": "2020-03-01", "freq": "3h"}
    two = write_netcdf_files(tmp_path / "two", 2, 5, ("t2m", "msl"), **kwargs)
    one = write_netcdf_files(tmp_path / "one", 1, 10, ("t2m", "msl"), **kwargs)
    assert [p.name for p in two] == ["synthetic-000.nc", "synthetic-001.nc"]
    with xr.open_dataset(one[0]) as whole, xr.open_dataset(two[1]) as part:
        xr.testing.assert_identical(whole.isel(time=slice(5, 10)).load(), part.load())


def test_shapes_dtypes_units_and_magnitudes() -> None:
    ds = synthetic_dataset(
        4,
        ("t2m", "msl", "u10", "v10", "z", "t", "q"),
        resolution=2.5,
        levels=[500, 850],
        members=3,
        seed=1,
    )
    assert ds.t2m.dims == ("time", "member", "lat", "lon")
    assert ds.t2m.shape == (4, 3, 73, 144)
    assert ds.z.dims == ("time", "level", "member", "lat", "lon")
    assert list(ds.level.values) == [500, 850]
    assert ds.lat.values[0] == 90.0 and np.all(np.diff(ds.lat.values) < 0)
    assert ds.lon.values[0] == -180.0 and ds.lon.values.max() < 180.0
    units = {"t2m": "K", "msl": "Pa", "u10": "m s**-1", "z": "m**2 s**-2", "t": "K"}
    for name, unit in units.items():
        assert ds[name].dtype == np.float32
        assert ds[name].attrs["units"] == unit
        assert "standard_name" in ds[name].attrs
    assert float(ds.t2m.min()) > 215 and float(ds.t2m.max()) < 325
    assert 250 < float(ds.t2m.mean()) < 295
    assert float(ds.msl.min()) > 95000 and float(ds.msl.max()) < 107000
    assert abs(float(ds.msl.mean()) - 101325) < 800
    z500 = ds.z.sel(level=500)
    assert 50000 < float(z500.mean()) < 58000
    assert float(ds.z.sel(level=850).mean()) < float(z500.mean())
    for name in ("u10", "v10"):
        assert float(np.abs(ds[name]).max()) < 45
        assert 1 < float(ds[name].std()) < 15
    assert float(ds.q.min()) > 0
    assert not any(bool(ds[name].isnull().any()) for name in ds.data_vars)
    # members differ, but only by a perturbation
    spread = ds.t2m.isel(member=1) - ds.t2m.isel(member=0)
    assert 0 < float(np.abs(spread).mean()) < 3


def test_fields_are_smooth_in_space_and_time() -> None:
    """Neighbour differences are a few % of the spread (white noise: about 113 %)."""
    ds = synthetic_dataset(12, ("t2m", "msl", "u10"), resolution=0.5, seed=5)
    for name in ("t2m", "msl", "u10"):
        values = ds[name].values.astype("float64")
        spread = values.std()
        along_lon = np.abs(np.diff(values, axis=2)).mean()
        along_lat = np.abs(np.diff(values, axis=1)).mean()
        along_time = np.abs(np.diff(values, axis=0)).mean()
        assert along_lon < 0.15 * spread, name
        assert along_lat < 0.15 * spread, name
        assert along_time < 0.2 * spread, name
    chunk = np.ascontiguousarray(ds.t2m.values[:, :180, :360])
    compressed = numcodecs.Blosc("zstd", 3, numcodecs.Blosc.SHUFFLE).encode(chunk)
    ratio = chunk.nbytes / len(compressed)
    assert 1.2 < ratio < 4, f"t2m compresses {ratio:.2f}x: noise or constant, not weather"


def test_anomalies_move_west_to_east() -> None:
    times = pd.date_range("2020-01-01", periods=2, freq="6h")
    ds = synthetic_dataset(times, ("msl",), resolution=1.0, seed=2)
    band = ds.msl.sel(lat=slice(60, 30)).values.astype("float64")
    band -= band.mean(axis=(1, 2), keepdims=True)
    first, second = band[0], band[1]
    errors = {
        shift: np.abs(np.roll(first, shift, axis=1) - second).mean() for shift in range(-8, 9)
    }
    assert 1 <= min(errors, key=errors.__getitem__) <= 6, "anomalies drift about 0.5-0.8 deg/h"


def test_other_orientation_and_names_normalise_to_the_canonical_values(tmp_path: Path) -> None:
    kwargs = {"seed": 9, "lat": 19, "lon": 36, "levels": [500], "members": 2}
    canonical = synthetic_dataset(3, ("t2m", "z"), **kwargs)
    [path] = write_netcdf_files(
        tmp_path,
        1,
        3,
        ("t2m", "z"),
        lat_descending=False,
        lon_0_360=True,
        naming="era5",
        rename={"t2m": "2t"},
        **kwargs,
    )
    raw = xr.open_dataset(path)
    assert raw.latitude.values[0] == -90.0 and raw.longitude.values.min() == 0.0
    assert set(raw.data_vars) == {"2t", "z"} and "pressure_level" in raw.dims
    assert raw.time.encoding["units"].startswith("hours since 1900")
    config = NetcdfSource(kind="netcdf", urls=[str(path)], variables=["t2m", "z"])
    normalised = normalise(raw, config, str(path)).load()
    np.testing.assert_array_equal(normalised.lat.values, canonical.lat.values)
    np.testing.assert_array_equal(normalised.lon.values, canonical.lon.values)
    for name in ("t2m", "z"):
        np.testing.assert_array_equal(normalised[name].values, canonical[name].values)


def test_regular_grid_and_bad_inputs() -> None:
    lat, lon = regular_grid(0.25)
    assert (len(lat), len(lon)) == (721, 1440)
    with pytest.raises(ValueError, match="does not divide"):
        regular_grid(0.7)
    with pytest.raises(ValueError, match="no synthetic model"):
        synthetic_dataset(1, ("precip",))
