"""Alembic environment of the project database.

Run programmatically by ``pipelines.db.migrate``, which hands over an open connection (inside a
transaction that holds the migration lock) through ``config.attributes["connection"]``. The
``alembic`` command line also works: the URL comes from ``-x url=...``, the ``sqlalchemy.url``
option, or the ``DATABASE_URL`` environment variable, in that order.

Modules that define tables on :class:`schemas.tables.Base` must be imported here so that
``alembic revision --autogenerate`` sees them.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool

import schemas.api_tables  # registers api_keys
import schemas.operations_tables  # registers verification_scores
import schemas.registry_tables  # registers models and skill_scores
import schemas.tables  # registers the core tables on Base.metadata
from schemas.forecast_tables import is_forecast_partition  # registers forecasts

config = context.config
target_metadata = schemas.tables.Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    return url or os.environ.get("DATABASE_URL", "sqlite:///output/climate.db")


def _not_a_partition(name: str | None, type_: str, parents: object) -> bool:
    """Autogenerate ignores the forecast partitions made at run time."""
    return not (type_ == "table" and is_forecast_partition(name))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=_not_a_partition,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL of the migrations instead of running them (``alembic upgrade --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the connection given by ``migrate`` or on a fresh one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
