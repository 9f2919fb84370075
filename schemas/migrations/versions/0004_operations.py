"""Operations: the rolling ``verification_scores`` table of the nightly job.

Revision ID: 0004_operations
Revises: 0003_forecasts
Create Date: 2026-12-06 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_operations"
down_revision: str | None = "0003_forecasts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "verification_scores",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("variable", sa.String(32), nullable=False),
        sa.Column("lead_hours", sa.Integer(), nullable=False),
        sa.Column("init_time", _utc(), nullable=False),
        sa.Column("valid_time", _utc(), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("rmse", sa.Double(), nullable=True),
        sa.Column("bias", sa.Double(), nullable=True),
        sa.Column("n_points", sa.Integer(), nullable=False),
        sa.Column("verified_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint(
            "run_id", "variable", "lead_hours", "init_time", name=op.f("pk_verification_scores")
        ),
        sa.CheckConstraint("lead_hours >= 0", name=op.f("ck_verification_scores_lead_hours")),
    )
    op.create_index(
        op.f("ix_verification_scores_model_sha256_valid_time"),
        "verification_scores",
        ["model_sha256", "valid_time"],
    )
    op.create_index(
        op.f("ix_verification_scores_verified_at"), "verification_scores", ["verified_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_verification_scores_verified_at"), table_name="verification_scores")
    op.drop_index(
        op.f("ix_verification_scores_model_sha256_valid_time"), table_name="verification_scores"
    )
    op.drop_table("verification_scores")
