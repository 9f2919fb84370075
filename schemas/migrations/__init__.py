"""Alembic migrations of the project database; run them with ``pipelines.db.migrate``."""
