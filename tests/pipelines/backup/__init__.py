"""Backups and restores of the database and the registry objects."""
