"""One base error with families; each also subclasses the matching built-in.

Every message says what was found and how to fix it. Library errors are translated at the
edges with ``raise ... from exc`` so the cause is kept.
"""

from __future__ import annotations


class ClimateError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(ClimateError, ValueError):
    """A configuration file or setting is invalid."""


class SourceError(ClimateError, OSError):
    """A source file cannot be found, reached or decoded."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.detail = message

    def renamed(self, url: str) -> SourceError:
        """The same error naming ``url`` (the user's URL rather than a local copy's path)."""
        return SourceError(url, self.detail)


class SchemaError(ClimateError, ValueError):
    """Data does not fit the canonical schema (grid, variables, units, dimensions)."""


class ConflictError(SchemaError):
    """New data disagrees with what a store already holds."""


class StoreError(ClimateError, OSError):
    """A Zarr store cannot be opened, created or written."""


class SinkError(ClimateError, OSError):
    """A sink (database, store) refused a write."""


class ModelError(ClimateError, ValueError):
    """A model artefact is corrupt, mismatched or refused."""


def describe(exc: BaseException) -> str:
    """An error as a run summary shows it: ours as they are (they name the fix), others typed."""
    return str(exc) if isinstance(exc, ClimateError) else f"{type(exc).__name__}: {exc}"
