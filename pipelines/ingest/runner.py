"""The ingest driver: inventory, scan on workers, plan, write the template, write chunks."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from sqlalchemy import Engine

from pipelines.analysis_store import AnalysisStore, from_seconds, to_seconds
from pipelines.errors import SourceError
from pipelines.executors import Executor
from pipelines.ingest.plan import Plan, plan_ingest
from pipelines.ingest.scan import scan_file
from pipelines.ingest.tasks import ChunkResult, ScanResult, ScanTask, StoreTarget
from pipelines.ingest.write import write_chunks
from pipelines.ledger import IngestLedger, RunLedger
from pipelines.sources import reader_for
from pipelines.storage import StoredFile, fsspec_options, inventory
from schemas.config import IngestConfig
from schemas.settings import Settings

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Receives progress of the long stages (a CLI draws bars from it)."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str) -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        log.info("%s: %d item(s)", name, total)

    def advance(self, name: str) -> None:
        return None


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


def source_selection_digest(config: IngestConfig) -> str:
    """What decides a file's content in the store besides its bytes (variables, selection...).

    It is part of each ledger fingerprint: the same file read another way is another input.
    """
    selection = config.source.model_dump(mode="json", exclude={"urls"})
    text = json.dumps(selection, sort_keys=True)
    return "src:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _inventory(
    config: IngestConfig, options: dict[str, object], summary: IngestSummary
) -> list[StoredFile]:
    reader = reader_for(config.source)
    selection = source_selection_digest(config)
    found: dict[str, StoredFile] = {}
    for pattern in config.source.urls:
        try:
            for stored in inventory(pattern, options, reader.suffixes, stores=reader.is_store):
                identity = f"{stored.fingerprint}|{selection}"
                found.setdefault(stored.url, replace(stored, fingerprint=identity))
        except SourceError as exc:
            summary.failures[pattern] = str(exc)
    summary.files_found = len(found)
    return sorted(found.values(), key=lambda stored: stored.url)


def _target(store: AnalysisStore, ingest_ledger: IngestLedger) -> StoreTarget:
    if not store.exists():
        stale = ingest_ledger.forget_store(store.url)
        if stale:
            log.warning("store %s is gone: forgot %d ledger row(s)", store.url, stale)
        return StoreTarget(store.url, store.storage_options)
    state = store.state()
    return StoreTarget(
        url=store.url,
        storage_options=store.storage_options,
        layout=state.layout,
        time_chunk=state.time_chunk,
        axis_seconds=to_seconds(state.times),
        committed_seconds=ingest_ledger.committed_times(store.url),
    )


def run_ingest(
    config: IngestConfig,
    settings: Settings,
    engine: Engine,
    executor: Executor,
    progress: Progress | None = None,
) -> IngestSummary:
    """Ingest every file the config names into its store.

    Files already committed are skipped, bad files are listed in the summary's failures (with
    the fix) while the good ones go in, and each file is committed in the ledger as soon as all
    of its chunks are written, so a run killed halfway resumes where it stopped.
    """
    started = time.perf_counter()
    progress = progress or _Silent()
    runs, ingest_ledger = RunLedger(engine), IngestLedger(engine)
    run_id = runs.start("ingest", config.model_dump(mode="json"), config.run_id)
    summary = IngestSummary(run_id=run_id, store_url=config.store.url)
    try:
        _ingest(config, settings, executor, progress, ingest_ledger, summary)
    except BaseException as exc:
        runs.finish(run_id, "failed", summary=_summary_row(summary), error=str(exc))
        raise
    summary.seconds = time.perf_counter() - started
    runs.finish(run_id, summary.status, summary=_summary_row(summary))
    return summary


def _ingest(
    config: IngestConfig,
    settings: Settings,
    executor: Executor,
    progress: Progress,
    ingest_ledger: IngestLedger,
    summary: IngestSummary,
) -> None:
    source_options = fsspec_options(config.source.urls[0], config.storage, settings)
    store = AnalysisStore(
        config.store.url, fsspec_options(config.store.url, config.storage, settings)
    )
    files = _inventory(config, source_options, summary)
    target = _target(store, ingest_ledger)
    to_scan = []
    for stored in files:
        if ingest_ledger.find_committed(store.url, stored.url, stored.fingerprint):
            summary.files_skipped += 1
        else:
            to_scan.append(stored)
    scans = _scan(to_scan, config, source_options, target, executor, progress)
    time_chunk = target.time_chunk or config.store.chunks.time
    plan = plan_ingest(
        scans, target, time_chunk, config.source, source_options, executor.parallelism
    )
    summary.failures.update(plan.failures)
    for url, error in plan.failures.items():
        stored_file = next((s for s in to_scan if s.url == url), None)
        if stored_file:
            ingest_ledger.mark_failed(
                summary.run_id, store.url, url, stored_file.size, stored_file.fingerprint, error
            )
    _write_template(store, target, plan, config)
    tracker = _CommitTracker(plan, scans, ingest_ledger, store.url, summary)
    tracker.commit_files_without_chunks()
    progress.stage("write", len(plan.tasks))
    for result in executor.map(write_chunks, plan.tasks):
        tracker.record(result)
        progress.advance("write")
    summary.times_added = len(np.setdiff1d(plan.axis_seconds, target.axis_seconds))
    summary.times_in_store = len(plan.axis_seconds)


def _scan(
    files: list[StoredFile],
    config: IngestConfig,
    options: dict[str, object],
    target: StoreTarget,
    executor: Executor,
    progress: Progress,
) -> list[ScanResult]:
    tasks = [ScanTask(stored, config.source, dict(options), target) for stored in files]
    progress.stage("scan", len(tasks))
    scans = []
    for result in executor.map(scan_file, tasks):
        scans.append(result)
        progress.advance("scan")
    return scans


def _write_template(
    store: AnalysisStore, target: StoreTarget, plan: Plan, config: IngestConfig
) -> None:
    """Write the store's metadata once, before any chunk: create it, or grow its time axis."""
    if not plan.tasks or plan.layout is None:
        return
    axis = from_seconds(plan.axis_seconds)
    if target.layout is None:
        store.create(plan.layout, axis, config.store.chunks, config.store.compression)
    else:
        store.extend(axis)


class _CommitTracker:
    """Commits each file in the ledger as soon as every chunk task holding its times succeeded,
    so that a run killed halfway resumes without redoing finished files."""

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

    def commit_files_without_chunks(self) -> None:
        for url in sorted(self.scans):
            if self.pending.get(url, 0) == 0:
                self._finish(url)

    def record(self, result: ChunkResult) -> None:
        if result.ok:
            self.summary.chunks_written += len(result.chunks)
            self.summary.bytes_written += result.bytes_written
        seconds = self.summary.worker_seconds
        seconds["read"] = seconds.get("read", 0.0) + result.read_seconds
        seconds["write"] = seconds.get("write", 0.0) + result.write_seconds
        for url in result.files:
            if not result.ok:
                self.errors[url].append(f"chunks {list(result.chunks)}: {result.error}")
            self.pending[url] -= 1
            if self.pending[url] == 0:
                self._finish(url)

    def _finish(self, url: str) -> None:
        scan = self.scans[url]
        stored = scan.stored
        if self.errors.get(url):
            message = f"{url}: " + "; ".join(self.errors[url])
            self.summary.failures[url] = message
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


def _summary_row(summary: IngestSummary) -> dict[str, object]:
    return {
        "store_url": summary.store_url,
        "files_found": summary.files_found,
        "files_skipped": summary.files_skipped,
        "files_ingested": summary.files_ingested,
        "files_unchanged": summary.files_unchanged,
        "times_added": summary.times_added,
        "chunks_written": summary.chunks_written,
        "bytes_written": summary.bytes_written,
        "worker_seconds": {k: round(v, 3) for k, v in summary.worker_seconds.items()},
        "failures": summary.failures,
    }
