"""Core tables: the run ledger (``runs``) and the ingest ledger (``ingest_files``).

Revision ID: 0001_core
Revises:
Create Date: 2025-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_core"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json(*, nullable: bool = False) -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=nullable).with_variant(
        postgresql.JSONB(none_as_null=nullable), "postgresql"
    )


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("summary", _json(nullable=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_runs")),
        sa.CheckConstraint(
            "status IN ('failed', 'partial', 'running', 'succeeded')", name=op.f("ck_runs_status")
        ),
    )
    op.create_index(op.f("ix_runs_kind_started_at"), "runs", ["kind", "started_at"])

    op.create_table(
        "ingest_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("store_url", sa.String(1024), nullable=False),
        sa.Column("file_url", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("checksum", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("times", _json(), nullable=False),
        sa.Column("time_start", _utc(), nullable=True),
        sa.Column("time_end", _utc(), nullable=True),
        sa.Column("n_times", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_files")),
        sa.UniqueConstraint(
            "store_url",
            "file_url",
            "fingerprint",
            name=op.f("uq_ingest_files_store_url_file_url_fingerprint"),
        ),
        sa.CheckConstraint(
            "status IN ('committed', 'failed', 'pending')", name=op.f("ck_ingest_files_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_ingest_files_run_id_runs")
        ),
    )
    op.create_index(
        op.f("ix_ingest_files_store_url_status"), "ingest_files", ["store_url", "status"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ingest_files_store_url_status"), table_name="ingest_files")
    op.drop_table("ingest_files")
    op.drop_index(op.f("ix_runs_kind_started_at"), table_name="runs")
    op.drop_table("runs")
