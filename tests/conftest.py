"""Suite-wide fixtures: real PostgreSQL, a real S3 API (moto server), one real local Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.db", "tests.fixtures.ray", "tests.fixtures.s3"]

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / "tests" / "data"
SAMPLE = ROOT / "data" / "sample" / "era5-2mt-2019-03-uk.grib"


@pytest.fixture(scope="session")
def sample_grib() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def test_data() -> Path:
    return TEST_DATA
