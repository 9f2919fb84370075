"""The small, picklable messages passed between the ingest driver and its workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.storage import StoredFile
from pipelines.store_layout import StoreLayout
from schemas.config import SourceConfig


@dataclass(frozen=True)
class StoreTarget:
    """Where the store is and what it already holds (None for a new store)."""

    url: str
    storage_options: dict[str, Any]
    layout: StoreLayout | None = None
    time_chunk: int | None = None
    axis_seconds: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))
    committed_seconds: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))


@dataclass(frozen=True)
class ScanTask:
    """Open and check one file from its metadata; decode only the times named in
    ``digest_seconds`` (shared with other files of the run) and those the store already holds."""

    stored: StoredFile
    source: SourceConfig
    source_options: dict[str, Any]
    target: StoreTarget
    digest_seconds: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))


@dataclass(frozen=True)
class ScanResult:
    """What a file holds, or why it cannot be ingested."""

    stored: StoredFile
    error: str | None = None
    checksum: str | None = None
    layout: StoreLayout | None = None
    seconds: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))
    digests: dict[int, str] = field(default_factory=dict)  # content digest of some times
    unchanged_seconds: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Piece:
    """The times one file contributes to one chunk batch, and where they go."""

    stored: StoredFile
    seconds: np.ndarray
    positions: np.ndarray


@dataclass(frozen=True)
class ChunkTask:
    """Write whole time chunks ``chunks`` from the pieces; one task per chunk, ever."""

    chunks: tuple[int, ...]
    time_chunk: int
    pieces: tuple[Piece, ...]
    source: SourceConfig
    source_options: dict[str, Any]
    target: StoreTarget


@dataclass(frozen=True)
class ChunkResult:
    """Which chunks were written, for which files, or why not: ``error`` fails every file of
    the task, ``failed`` names the files that could not be decoded (the others were written)."""

    chunks: tuple[int, ...]
    files: tuple[str, ...]
    error: str | None = None
    failed: dict[str, str] = field(default_factory=dict)
    bytes_written: int = 0
    read_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None
