"""Forecast tests write PostgreSQL partitions (``forecasts_d*``, ``fcs_*``) at run time, so they
use their own databases rather than the suite's shared one: schema comparisons elsewhere
(``test_db``) stay unaffected."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from pipelines.db import make_engine, migrate
from tests.fixtures.db import _truncate_postgres


@pytest.fixture(scope="module")
def forecast_pg_url(postgres_database_factory: Callable[[], str]) -> str:
    """A migrated PostgreSQL database of this test module (dropped at the session's end)."""
    url = postgres_database_factory()
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.db)])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated engine with empty tables: a SQLite file, or this module's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'climate.db'}"
    else:
        url = request.getfixturevalue("forecast_pg_url")
    eng = make_engine(url)
    migrate(eng)
    try:
        yield eng
    finally:
        if eng.dialect.name == "postgresql":
            _truncate_postgres(eng)
        eng.dispose()
