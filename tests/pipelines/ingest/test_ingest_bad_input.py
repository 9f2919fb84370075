"""Bad inputs: each fails with a message naming the file and the fix; good files still go in."""

from __future__ import annotations

from pathlib import Path

import eccodes
import numpy as np
import pytest
import xarray as xr

from tests.pipelines.ingest.helpers import ingest, make_config, sqlite_engine

pytestmark = pytest.mark.usefixtures("ray_session")


def grib_from_sample(path: Path, sample: str, values: np.ndarray | None = None) -> Path:
    """One 2 m temperature message on an ecCodes sample grid."""
    handle = eccodes.codes_grib_new_from_samples(sample)
    eccodes.codes_set(handle, "shortName", "2t")
    if values is not None:
        eccodes.codes_set_values(handle, values)
    with open(path, "wb") as out:
        eccodes.codes_write(handle, out)
    eccodes.codes_release(handle)
    return path


def small_netcdf(path: Path, sample_grib: Path, units: str = "K", name: str = "t2m") -> Path:
    raw = xr.open_dataset(sample_grib, engine="cfgrib", backend_kwargs={"indexpath": ""})
    part = raw[["t2m"]].isel(time=slice(0, 24)).drop_vars(["number", "step", "surface"]).load()
    part["t2m"].attrs = {"units": units}
    part.rename({"t2m": name}).to_netcdf(path)
    return path


def test_corrupt_grib_names_the_file_and_writes_nothing(test_data: Path, tmp_path: Path) -> None:
    corrupt = test_data / "era5-levels-corrupted.grib"
    config = make_config([corrupt], tmp_path / "c.zarr", ["t"])
    summary = ingest(config, sqlite_engine(tmp_path))
    message = summary.failures[str(corrupt)]
    assert str(corrupt) in message and "re-download" in message
    assert not (tmp_path / "c.zarr").exists()
    assert summary.status == "failed"


def test_one_run_with_good_and_bad_files(
    sample_grib: Path, test_data: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = small_netcdf(inputs / "a-good.nc", sample_grib)
    empty = inputs / "b-empty.nc"
    empty.write_bytes(b"")
    truncated = inputs / "c-truncated.nc"
    truncated.write_bytes(good.read_bytes()[:5000])
    missing = small_netcdf(inputs / "d-missing.nc", sample_grib, name="sst")
    fahrenheit = small_netcdf(inputs / "e-fahrenheit.nc", sample_grib, units="degF")
    config = make_config([inputs], tmp_path / "s.zarr", ["t2m"], kind="netcdf")
    summary = ingest(config, sqlite_engine(tmp_path))
    assert summary.files_ingested == 1 and summary.status == "partial"
    failures = summary.failures
    assert set(failures) == {str(empty), str(truncated), str(missing), str(fahrenheit)}
    assert "is empty" in failures[str(empty)]
    assert "cannot be opened as NetCDF" in failures[str(truncated)]
    assert "missing variable(s) ['t2m']" in failures[str(missing)]
    assert "rename" in failures[str(missing)]
    assert "units 'degF', expected 'K'" in failures[str(fahrenheit)]
    store = xr.open_zarr(tmp_path / "s.zarr").load()
    np.testing.assert_array_equal(store.t2m.values, xr.open_dataset(good).t2m.values)


def test_celsius_is_converted(sample_grib: Path, tmp_path: Path) -> None:
    raw = xr.open_dataset(sample_grib, engine="cfgrib", backend_kwargs={"indexpath": ""})
    part = raw[["t2m"]].isel(time=slice(0, 5)).drop_vars(["number", "step", "surface"]).load()
    celsius = part.copy()
    celsius["t2m"] = (part.t2m - 273.15).assign_attrs(units="degC")
    celsius.to_netcdf(tmp_path / "c.nc")
    config = make_config([tmp_path / "c.nc"], tmp_path / "s.zarr", ["t2m"], kind="netcdf")
    assert ingest(config, sqlite_engine(tmp_path)).clean
    store = xr.open_zarr(tmp_path / "s.zarr").load()
    assert store.t2m.attrs["units"] == "K"
    np.testing.assert_allclose(store.t2m.values, part.t2m.values, atol=1e-4)


def test_reduced_gaussian_grid_is_refused(tmp_path: Path) -> None:
    path = grib_from_sample(tmp_path / "reduced.grib", "reduced_gg_pl_32_grib2")
    summary = ingest(make_config([path], tmp_path / "r.zarr", ["t2m"]), sqlite_engine(tmp_path))
    message = summary.failures[str(path)]
    assert "grid type ['reduced_gg'] is not supported" in message and "regrid" in message
    assert not (tmp_path / "r.zarr").exists()


def test_regular_gaussian_grid_is_accepted(tmp_path: Path) -> None:
    values = np.linspace(220.0, 300.0, 128 * 64)
    path = grib_from_sample(tmp_path / "gaussian.grib", "regular_gg_sfc_grib2", values)
    summary = ingest(make_config([path], tmp_path / "g.zarr", ["t2m"]), sqlite_engine(tmp_path))
    assert summary.clean, summary.failures
    store = xr.open_zarr(tmp_path / "g.zarr").load()
    assert store.attrs["grid_type"] == "regular_gg"
    assert store.sizes == {"time": 1, "lat": 64, "lon": 128}
    spacing = np.diff(store.lat.values)
    assert np.all(spacing < 0) and np.ptp(spacing) > 1e-4, "Gaussian latitudes are uneven"
    raw = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})
    expected = raw.t2m.roll(longitude=64, roll_coords=True).values.astype("float32")
    np.testing.assert_array_equal(store.t2m.values[0], expected)


def test_curvilinear_grid_is_refused(tmp_path: Path) -> None:
    lat2d = np.linspace(50, 60, 12, dtype="float32").reshape(3, 4)
    lon2d = np.linspace(-5, 5, 12, dtype="float32").reshape(3, 4)
    dataset = xr.Dataset(
        {"t2m": (("time", "y", "x"), np.full((1, 3, 4), 280, "float32"), {"units": "K"})},
        coords={
            "time": [np.datetime64("2020-01-01")],
            "lat": (("y", "x"), lat2d),
            "lon": (("y", "x"), lon2d),
        },
    )
    dataset.to_netcdf(tmp_path / "curvi.nc")
    config = make_config([tmp_path / "curvi.nc"], tmp_path / "r.zarr", ["t2m"], kind="netcdf")
    summary = ingest(config, sqlite_engine(tmp_path))
    assert "not one-dimensional axes" in summary.failures[str(tmp_path / "curvi.nc")]


def test_glob_matching_nothing_is_reported(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing-*.grib")
    summary = ingest(make_config([pattern], tmp_path / "r.zarr", ["t2m"]), sqlite_engine(tmp_path))
    assert "matched no files" in summary.failures[pattern]
    assert summary.status == "failed"
