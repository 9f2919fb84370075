"""Ingest from and into a real S3 API (moto's server), and S3 failures named with their fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from schemas.settings import Settings
from tests.fixtures.s3 import S3Server, free_port
from tests.pipelines.ingest.helpers import direct_read, ingest, make_config, sqlite_engine

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.s3]


@pytest.fixture
def bucket(s3_env: S3Server, sample_grib: Path, test_data: Path) -> str:
    client = s3_env.client()
    name = "era5"
    existing = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    if name not in existing:
        client.create_bucket(Bucket=name)
        client.upload_file(str(sample_grib), name, "raw/uk/era5-2mt.grib")
        client.upload_file(str(test_data / "era5-levels-members.grib"), name, "raw/ens/m.grib")
    return name


def test_prefix_to_s3_store_equals_direct_read(
    bucket: str, sample_grib: Path, tmp_path: Path
) -> None:
    store_url = f"s3://{bucket}/stores/{tmp_path.name}.zarr"
    config = make_config([f"s3://{bucket}/raw/uk/"], store_url, ["t2m"])
    summary = ingest(config, sqlite_engine(tmp_path), Settings())
    assert summary.clean, summary.failures
    settings = Settings()
    options = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": settings.s3_endpoint_url,
    }
    store = xr.open_zarr(store_url, storage_options=options).load()
    expected = direct_read(sample_grib, config)
    np.testing.assert_array_equal(store.t2m.values, expected.t2m.values)
    again = ingest(config, sqlite_engine(tmp_path), Settings())
    assert again.files_skipped == 1 and again.times_added == 0


def test_missing_key_is_named(bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/raw/uk/does-not-exist.grib"
    summary = ingest(make_config([url], tmp_path / "s.zarr", ["t2m"]), sqlite_engine(tmp_path))
    assert "no such file or object" in summary.failures[url]
    assert summary.status == "failed"


def test_wrong_credentials_are_named(
    s3_server_with_auth: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server_with_auth.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    url = "s3://era5/raw/uk/"
    summary = ingest(
        make_config([url], tmp_path / "s.zarr", ["t2m"]), sqlite_engine(tmp_path), Settings()
    )
    assert "refused the credentials" in summary.failures[url]
    assert "AWS_ACCESS_KEY_ID" in summary.failures[url]


def test_unreachable_endpoint_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    url = "s3://era5/raw/uk/"
    summary = ingest(
        make_config([url], tmp_path / "s.zarr", ["t2m"]), sqlite_engine(tmp_path), Settings()
    )
    assert "cannot reach the object store endpoint" in summary.failures[url]
