"""What an ingest run did, as returned to the caller and stored with the run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IngestSummary:
    """What a run did; ``failures`` maps each failed input to the reason and the fix."""

    run_id: str
    store_url: str
    files_found: int = 0
    files_skipped: int = 0
    files_ingested: int = 0
    files_unchanged: int = 0
    times_added: int = 0
    times_in_store: int = 0
    chunks_written: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    worker_seconds: dict[str, float] = field(default_factory=dict)  # summed over tasks
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.failures

    @property
    def status(self) -> str:
        if self.clean:
            return "succeeded"
        return "partial" if self.files_ingested or self.files_unchanged else "failed"
