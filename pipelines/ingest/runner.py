"""The ingest driver: inventory, scan on workers, plan, write the template, write chunks."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

import numpy as np
from sqlalchemy import Engine

from pipelines.analysis_store import AnalysisStore, from_seconds, to_seconds
from pipelines.errors import SourceError
from pipelines.executors import Executor
from pipelines.ingest.commits import CommitTracker
from pipelines.ingest.plan import Plan, plan_ingest
from pipelines.ingest.scan import scan_file
from pipelines.ingest.summary import IngestSummary
from pipelines.ingest.tasks import ScanResult, ScanTask, StoreTarget
from pipelines.ingest.write import write_chunks
from pipelines.ledger import IngestLedger, RunLedger
from pipelines.sources import reader_for
from pipelines.storage import StoredFile, fsspec_options, inventory
from schemas.config import IngestConfig
from schemas.settings import Settings

log = logging.getLogger(__name__)
TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")
__all__ = ["IngestSummary", "Progress", "run_ingest", "source_selection_digest"]


class Progress(Protocol):
    """Receives progress of the long stages (a CLI draws bars from it)."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str) -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        log.info("%s: %d item(s)", name, total)

    def advance(self, name: str) -> None:
        return None


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
    tracker = CommitTracker(plan, scans, ingest_ledger, store.url, summary)
    tracker.commit_files_without_chunks()
    for result in _stage("write", write_chunks, plan.tasks, executor, progress):
        tracker.record(result)
    axis = _drop_failed_tail(store, target, plan, tracker.failed)
    summary.times_added = len(np.setdiff1d(axis, target.axis_seconds))
    summary.times_in_store = len(axis)


def _stage(
    name: str,
    fn: Callable[[TaskT], ResultT],
    tasks: Sequence[TaskT],
    executor: Executor,
    progress: Progress,
) -> Iterator[ResultT]:
    progress.stage(name, len(tasks))
    for result in executor.map(fn, tasks):
        yield result
        progress.advance(name)


def _scan(
    files: list[StoredFile],
    config: IngestConfig,
    options: dict[str, object],
    target: StoreTarget,
    executor: Executor,
    progress: Progress,
) -> list[ScanResult]:
    """Scan every file; files holding a time that another file also holds are scanned again
    to digest those times (rare: overlapping inputs), so the plan can check they agree."""
    tasks = [ScanTask(stored, config.source, dict(options), target) for stored in files]
    scans = {scan.stored.url: scan for scan in _stage("scan", scan_file, tasks, executor, progress)}
    shared = _shared_times(list(scans.values()))
    again = [
        replace(task, digest_seconds=shared)
        for task in tasks
        if scans[task.stored.url].ok and np.isin(scans[task.stored.url].seconds, shared).any()
    ]
    if again:
        for scan in _stage("digest", scan_file, again, executor, progress):
            scans[scan.stored.url] = scan
    return [scans[stored.url] for stored in files]


def _shared_times(scans: list[ScanResult]) -> np.ndarray:
    """New times held by more than one file of the run."""
    new = [np.setdiff1d(scan.seconds, scan.unchanged_seconds) for scan in scans if scan.ok]
    if len(new) < 2:
        return np.empty(0, dtype="int64")
    seconds, counts = np.unique(np.concatenate(new), return_counts=True)
    return seconds[counts > 1]


def _drop_failed_tail(
    store: AnalysisStore, target: StoreTarget, plan: Plan, failed: set[str]
) -> np.ndarray:
    """The final time axis. New times at its end that only files which failed would have
    filled are cut off again, and a store this run created but could not fill is removed."""
    lost = [plan.contributions[url] for url in sorted(failed) if url in plan.contributions]
    axis = plan.axis_seconds
    if not lost or not plan.tasks:
        return axis
    dropped = set(np.concatenate(lost).tolist())
    keep = len(axis)
    while keep > len(target.axis_seconds) and int(axis[keep - 1]) in dropped:
        keep -= 1
    if keep == len(axis):
        return axis
    if keep == 0:
        store.remove()
    else:
        store.truncate(keep)
    return axis[:keep]


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
