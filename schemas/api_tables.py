"""API keys of the online API (``api_keys``): hashed secrets, never the secrets themselves.

A key is shown to its owner once, as ``ck_<key_id>_<secret>``. The row keeps the public
``key_id`` (to find the row), a per-key random salt and ``HMAC-SHA256(salt, secret)``; the
secret is 256 random bits, so a fast keyed hash is as strong as a slow password hash here and
keeps each request's check cheap. ``hash_scheme`` names the scheme so it can change later.
``rate_per_minute`` NULL means the service's default. The DDL lives in migration
``0005_api_keys``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables import Base, UTCDateTime, utcnow

HASH_SCHEMES: frozenset[str] = frozenset({"hmac-sha256"})


class ApiKey(Base):
    """One API key: its public id, owner label, salted hash, rate limit and lifetime."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_id"),
        CheckConstraint("rate_per_minute IS NULL OR rate_per_minute > 0", name="rate_per_minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    hash_scheme: Mapped[str] = mapped_column(String(32))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(128))
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
