"""Forecast values: ``forecasts`` (partitioned on PostgreSQL) and the SQLite staging table.

Revision ID: 0003_forecasts
Revises: 0002_registry
Create Date: 2025-01-03 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003_forecasts"
down_revision: str | None = "0002_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# PostgreSQL: partitioned by init_time (one partition per UTC day, made on demand by the sink),
# each day by run_id (one leaf per run, attached when the run commits).
_POSTGRES_DDL = (
    """
    CREATE TABLE forecasts (
        run_id varchar(64) NOT NULL,
        model_sha256 varchar(64) NOT NULL,
        init_time timestamptz NOT NULL,
        lead_hours integer NOT NULL,
        valid_time timestamptz NOT NULL,
        variable varchar(32) NOT NULL,
        level integer,
        lat double precision NOT NULL,
        lon double precision NOT NULL,
        value real
    ) PARTITION BY RANGE (init_time)
    """,
    "CREATE INDEX ix_forecasts_variable_lat_lon_valid_time "
    "ON forecasts (variable, lat, lon, valid_time)",
    "CREATE INDEX ix_forecasts_variable_valid_time ON forecasts (variable, valid_time)",
)


def _columns() -> list[sa.Column[Any]]:
    utc = sa.DateTime(timezone=True)
    return [
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("init_time", utc, nullable=False),
        sa.Column("lead_hours", sa.Integer(), nullable=False),
        sa.Column("valid_time", utc, nullable=False),
        sa.Column("variable", sa.String(32), nullable=False),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("lat", sa.Double(), nullable=False),
        sa.Column("lon", sa.Double(), nullable=False),
        sa.Column("value", sa.REAL(), nullable=True),
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES_DDL:
            op.execute(statement)
    else:
        op.create_table("forecasts", *_columns())
        op.create_index(
            op.f("ix_forecasts_variable_lat_lon_valid_time"),
            "forecasts",
            ["variable", "lat", "lon", "valid_time"],
        )
        op.create_index(
            op.f("ix_forecasts_variable_valid_time"), "forecasts", ["variable", "valid_time"]
        )
    op.create_table(
        "forecasts_staging", sa.Column("attempt", sa.String(32), nullable=False), *_columns()
    )
    op.create_index(
        op.f("ix_forecasts_staging_attempt_init_time"),
        "forecasts_staging",
        ["attempt", "init_time"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_forecasts_staging_attempt_init_time"), table_name="forecasts_staging")
    op.drop_table("forecasts_staging")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE forecasts CASCADE")  # with every day partition and run leaf
    else:
        op.drop_index(op.f("ix_forecasts_variable_valid_time"), table_name="forecasts")
        op.drop_index(op.f("ix_forecasts_variable_lat_lon_valid_time"), table_name="forecasts")
        op.drop_table("forecasts")
