"""Driver side of the write step: commit each file in the ledger once all its chunks are in."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pipelines.ingest.plan import Plan
from pipelines.ingest.summary import IngestSummary
from pipelines.ingest.tasks import ChunkResult, ScanResult
from pipelines.ledger import IngestLedger


class CommitTracker:
    """Commits each file in the ledger as soon as every chunk task holding its times succeeded,
    so that a run killed halfway resumes without redoing finished files; a file that failed to
    decode or write in any task is marked failed (and its times never committed)."""

    def __init__(
        self,
        plan: Plan,
        scans: list[ScanResult],
        ingest_ledger: IngestLedger,
        store_url: str,
        summary: IngestSummary,
    ) -> None:
        self.ledger, self.store_url, self.summary = ingest_ledger, store_url, summary
        self.plan = plan
        self.scans = {scan.stored.url: scan for scan in scans if scan.ok}
        for url in plan.failures:
            self.scans.pop(url, None)
        self.pending: dict[str, int] = defaultdict(int)
        for task in plan.tasks:
            for piece in task.pieces:
                self.pending[piece.stored.url] += 1
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.failed: set[str] = set()

    def commit_files_without_chunks(self) -> None:
        for url in sorted(self.scans):
            if self.pending.get(url, 0) == 0:
                self._finish(url)

    def record(self, result: ChunkResult) -> None:
        if result.ok and len(result.failed) < len(result.files):
            self.summary.chunks_written += len(result.chunks)
            self.summary.bytes_written += result.bytes_written
        seconds = self.summary.worker_seconds
        seconds["read"] = seconds.get("read", 0.0) + result.read_seconds
        seconds["write"] = seconds.get("write", 0.0) + result.write_seconds
        for url in result.files:
            if url in result.failed:
                self.errors[url].append(result.failed[url])
            elif not result.ok:
                self.errors[url].append(f"chunks {list(result.chunks)}: {result.error}")
            self.pending[url] -= 1
            if self.pending[url] == 0:
                self._finish(url)

    def _finish(self, url: str) -> None:
        scan = self.scans[url]
        stored = scan.stored
        if self.errors.get(url):
            message = "; ".join(dict.fromkeys(self.errors[url]))
            message = message if message.startswith(url) else f"{url}: {message}"
            self.summary.failures[url] = message
            self.failed.add(url)
            self.ledger.mark_failed(
                self.summary.run_id, self.store_url, url, stored.size, stored.fingerprint, message
            )
            return
        contributed = self.plan.contributions.get(url, np.empty(0, dtype="int64"))
        seconds = np.union1d(contributed, scan.unchanged_seconds)
        self.ledger.mark_committed(
            self.summary.run_id,
            self.store_url,
            url,
            stored.size,
            stored.fingerprint,
            scan.checksum,
            [int(t) for t in seconds],
        )
        if len(contributed):
            self.summary.files_ingested += 1
        else:
            self.summary.files_unchanged += 1
