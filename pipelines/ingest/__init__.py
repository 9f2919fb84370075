"""Ingest: files in object storage -> one canonical Zarr store, resumable and idempotent."""
