"""Config loading: unknown keys and bad values fail before any work, naming key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.common import read_config
from pipelines.errors import ConfigError
from schemas.config import IngestConfig, NetcdfSource, apply_overrides

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid() -> None:
    config = read_config(IngestConfig, ROOT / "configs" / "ingest.yaml", [])
    assert config.source.kind == "grib" and config.store.chunks.time == 48


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "source: {kind: grib, urls: [a.grib], variables: [t2m]}\n"
        "store: {url: s.zarr, chunk: {time: 4}}\n",
    )
    with pytest.raises(ConfigError) as error:
        read_config(IngestConfig, path, [])
    assert "store.chunk = {'time': 4}: Extra inputs are not permitted" in str(error.value)


def test_bad_value_names_key_value_and_expectation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "source: {kind: grib, urls: [a.grib], variables: [t2m]}\n"
        "store: {url: s.zarr, chunks: {time: -3}}\n",
    )
    with pytest.raises(ConfigError) as error:
        read_config(IngestConfig, path, [])
    assert "store.chunks.time = -3: Input should be greater than or equal to 1" in str(error.value)


def test_unknown_source_kind_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "source: {kind: hdf4, urls: [a], variables: [t2m]}\nstore: {url: s}\n")
    with pytest.raises(ConfigError) as error:
        read_config(IngestConfig, path, [])
    assert "Input tag 'hdf4'" in str(error.value) and "'grib', 'netcdf', 'zarr'" in str(error.value)


def test_kind_specific_keys_are_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "source: {kind: netcdf, urls: [a.nc], variables: [t2m], "
        "filter_by_keys: {a: 1}}\nstore: {url: s}\n",
    )
    with pytest.raises(ConfigError, match=r"source\.netcdf\.filter_by_keys"):
        read_config(IngestConfig, path, [])


def test_unknown_variable_lists_the_lexicon(tmp_path: Path) -> None:
    path = write(
        tmp_path, "source: {kind: grib, urls: [a], variables: [temp2m]}\nstore: {url: s}\n"
    )
    with pytest.raises(ConfigError, match=r"unknown variable\(s\) \['temp2m'\].*t2m"):
        read_config(IngestConfig, path, [])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        read_config(IngestConfig, tmp_path / "nope.yaml", [])
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config(IngestConfig, write(tmp_path, "source: [unclosed\n"), [])


def test_dotted_overrides() -> None:
    data = {"store": {"url": "a", "chunks": {"time": 4}}}
    apply_overrides(data, ["store.chunks.time=24", "store.url=s3://b/x.zarr", "run_id=r1"])
    assert data == {"store": {"url": "s3://b/x.zarr", "chunks": {"time": 24}}, "run_id": "r1"}
    with pytest.raises(ValueError, match="not of the form"):
        apply_overrides(data, ["store.url"])


def test_source_models_are_frozen() -> None:
    source = NetcdfSource(kind="netcdf", urls=["a.nc"], variables=["t2m"])
    with pytest.raises(ValueError, match="frozen"):
        source.urls = ["b.nc"]  # type: ignore[misc]
