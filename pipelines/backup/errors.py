"""The refusal of a backup or restore: a corrupt or incomplete backup, or a target in use."""

from __future__ import annotations

from pipelines.errors import ClimateError


class BackupRefusedError(ClimateError, ValueError):
    """A backup failed its checks, or restoring it would overwrite data without ``--force``."""
