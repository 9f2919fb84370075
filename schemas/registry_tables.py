"""The model registry (``models``) and the skill scores of evaluated models (``skill_scores``).

``models`` holds one row per registered (name, version); the ONNX file and its card live in
object storage at ``artefact_url``. At most one version of a name is ``promoted``: a partial
unique index (SQLite and PostgreSQL both have them) enforces it. ``skill_scores`` holds one
row per (evaluation run, variable, lead time, metric). The DDL lives in migration
``0002_registry``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base, UTCDateTime, json_type, utcnow

MODEL_STATUSES: frozenset[str] = frozenset({"candidate", "promoted", "retired"})
SKILL_METRICS: frozenset[str] = frozenset({"rmse", "bias", "mae", "acc"})
PROMOTED_WHERE = "status = 'promoted'"


def _choice_check(column: str, values: frozenset[str], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in sorted(values))
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class RegisteredModel(Base):
    """One registered model version: its hash, status, card and where its files are."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        _choice_check("status", MODEL_STATUSES, "status"),
        Index(
            "uq_models_name_promoted",
            "name",
            unique=True,
            sqlite_where=text(PROMOTED_WHERE),
            postgresql_where=text(PROMOTED_WHERE),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    artefact_url: Mapped[str] = mapped_column(String(1024))
    card: Mapped[dict[str, Any]] = mapped_column(json_type())
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SkillScore(Base):
    """One score of one model at one lead time, with the two baselines scored alike."""

    __tablename__ = "skill_scores"
    __table_args__ = (
        UniqueConstraint("run_id", "variable", "lead_hours", "metric"),
        Index(None, "model_sha256", "variable", "metric"),
        _choice_check("metric", SKILL_METRICS, "metric"),
        CheckConstraint("lead_hours >= 0", name="lead_hours"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.run_id"))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(128))
    model_sha256: Mapped[str] = mapped_column(String(64))
    variable: Mapped[str] = mapped_column(String(32))
    lead_hours: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16))
    model_value: Mapped[float | None] = mapped_column(Double)
    persistence_value: Mapped[float | None] = mapped_column(Double)
    climatology_value: Mapped[float | None] = mapped_column(Double)
    n_inits: Mapped[int] = mapped_column(Integer)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
