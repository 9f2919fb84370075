"""Alembic revision scripts, one module per revision (``0001_core``, ``0002_registry``, ...)."""
