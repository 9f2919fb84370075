"""The rolling verification of forecasts against the analyses that arrived later.

``verification_scores`` holds one row per (forecast run, variable, lead time, initial time):
the latitude-weighted RMSE and bias of the forecast against the analysis at its valid time.
The nightly job adds the rows of every forecast whose verifying analysis has arrived; a re-run
replaces them (the key is unique). The DDL lives in migration ``0004_operations``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Double, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base, UTCDateTime, utcnow


class VerificationScore(Base):
    """How one forecast field verified against the analysis at its valid time."""

    __tablename__ = "verification_scores"
    __table_args__ = (
        Index(None, "model_sha256", "valid_time"),
        Index(None, "verified_at"),
        CheckConstraint("lead_hours >= 0", name="lead_hours"),
    )

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    variable: Mapped[str] = mapped_column(String(32), primary_key=True)
    lead_hours: Mapped[int] = mapped_column(Integer, primary_key=True)
    init_time: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    valid_time: Mapped[datetime] = mapped_column(UTCDateTime())
    model_sha256: Mapped[str] = mapped_column(String(64))
    rmse: Mapped[float | None] = mapped_column(Double)
    bias: Mapped[float | None] = mapped_column(Double)
    n_points: Mapped[int] = mapped_column(Integer)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
