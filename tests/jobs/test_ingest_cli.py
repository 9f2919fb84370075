"""The ingest entrypoint: summary, failures listed, exit status says whether the run was clean."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
import yaml

from jobs.ingest import EXIT_CLEAN, EXIT_ERROR, EXIT_FAILURES, main

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(autouse=True)
def local_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'climate.db'}")


def config_file(tmp_path: Path, urls: list[str], store: Path) -> Path:
    path = tmp_path / "ingest.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "source": {"kind": "grib", "urls": urls, "variables": ["t2m"]},
                "store": {"url": str(store)},
            }
        )
    )
    return path


def test_clean_run_exits_zero_and_prints_summary(
    sample_grib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, [str(sample_grib)], tmp_path / "a.zarr")
    assert main(["--config", str(config)]) == EXIT_CLEAN
    err = capsys.readouterr().err
    assert "succeeded" in err and "times added" in err
    assert xr.open_zarr(tmp_path / "a.zarr").sizes["time"] == 744


def test_failures_are_listed_and_exit_one(
    sample_grib: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.grib"
    corrupt.write_bytes(sample_grib.read_bytes()[:30_000])
    config = config_file(tmp_path, [str(sample_grib), str(corrupt)], tmp_path / "a.zarr")
    assert main(["--config", str(config)]) == EXIT_FAILURES
    err = capsys.readouterr().err
    assert "FAILED" in err and "corrupt.grib" in err and "re-download" in err
    assert xr.open_zarr(tmp_path / "a.zarr").sizes["time"] == 744


def test_bad_config_exits_two_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, ["x.grib"], tmp_path / "a.zarr")
    assert main(["--config", str(config), "--set", "store.chunks.time=zero"]) == EXIT_ERROR
    assert "store.chunks.time = 'zero'" in capsys.readouterr().err
    assert not (tmp_path / "a.zarr").exists()


def test_unreachable_database_exits_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://climate:secret@127.0.0.1:1/none")
    config = config_file(tmp_path, ["x.grib"], tmp_path / "a.zarr")
    assert main(["--config", str(config)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err and "secret" not in err and "DATABASE_URL" in err
