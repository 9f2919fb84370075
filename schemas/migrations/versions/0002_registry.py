"""Model registry (``models``) and skill scores (``skill_scores``).

Revision ID: 0002_registry
Revises: 0001_core
Create Date: 2025-01-02 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_registry"
down_revision: str | None = "0001_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROMOTED = "status = 'promoted'"


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=False).with_variant(
        postgresql.JSONB(none_as_null=False), "postgresql"
    )


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("artefact_url", sa.String(1024), nullable=False),
        sa.Column("card", _json(), nullable=False),
        sa.Column("registered_at", _utc(), nullable=False),
        sa.Column("promoted_at", _utc(), nullable=True),
        sa.Column("retired_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_models_name_version")),
        sa.CheckConstraint(
            "status IN ('candidate', 'promoted', 'retired')", name=op.f("ck_models_status")
        ),
    )
    # At most one promoted version per name.
    op.create_index(
        "uq_models_name_promoted",
        "models",
        ["name"],
        unique=True,
        sqlite_where=sa.text(_PROMOTED),
        postgresql_where=sa.text(_PROMOTED),
    )

    op.create_table(
        "skill_scores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("variable", sa.String(32), nullable=False),
        sa.Column("lead_hours", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("model_value", sa.Double(), nullable=True),
        sa.Column("persistence_value", sa.Double(), nullable=True),
        sa.Column("climatology_value", sa.Double(), nullable=True),
        sa.Column("n_inits", sa.Integer(), nullable=False),
        sa.Column("period_start", _utc(), nullable=False),
        sa.Column("period_end", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skill_scores")),
        sa.UniqueConstraint(
            "run_id",
            "variable",
            "lead_hours",
            "metric",
            name=op.f("uq_skill_scores_run_id_variable_lead_hours_metric"),
        ),
        sa.CheckConstraint(
            "metric IN ('acc', 'bias', 'mae', 'rmse')", name=op.f("ck_skill_scores_metric")
        ),
        sa.CheckConstraint("lead_hours >= 0", name=op.f("ck_skill_scores_lead_hours")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_skill_scores_run_id_runs")
        ),
    )
    op.create_index(
        op.f("ix_skill_scores_model_sha256_variable_metric"),
        "skill_scores",
        ["model_sha256", "variable", "metric"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_skill_scores_model_sha256_variable_metric"), table_name="skill_scores")
    op.drop_table("skill_scores")
    op.drop_index("uq_models_name_promoted", table_name="models")
    op.drop_table("models")
