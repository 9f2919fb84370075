"""Driver step: from scan results to the new time axis and one task per batch of whole chunks."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.analysis_store import from_seconds
from pipelines.ingest.regions import batch_chunks, group_by_chunk, positions_of
from pipelines.ingest.tasks import ChunkTask, Piece, ScanResult, StoreTarget
from pipelines.storage import StoredFile
from pipelines.store_layout import StoreLayout
from schemas.config import SourceConfig

TASK_BYTES_BUDGET = 256 * 1024 * 1024


@dataclass
class Plan:
    """What a run will write."""

    layout: StoreLayout | None
    axis_seconds: np.ndarray
    tasks: list[ChunkTask] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    contributions: dict[str, np.ndarray] = field(default_factory=dict)  # new times per file
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def new_seconds(self) -> np.ndarray:
        if not self.contributions:
            return np.empty(0, dtype="int64")
        return np.unique(np.concatenate(list(self.contributions.values())))


def _layout_problem(layout: StoreLayout, reference: StoreLayout, reference_url: str) -> str | None:
    difference = layout.grid.difference(reference.grid)
    if difference:
        return (
            f"grid does not match {reference_url} ({difference}); ingest the files of each grid "
            "into their own store"
        )
    if [(v.name, v.dims) for v in layout.variables] != [
        (v.name, v.dims) for v in reference.variables
    ]:
        return f"variables or dimensions differ from {reference_url}; ingest them separately"
    return None


def _seconds_text(seconds: np.integer | int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(seconds), "s"), unit="s"))


def plan_ingest(
    scans: list[ScanResult],
    target: StoreTarget,
    time_chunk: int,
    source: SourceConfig,
    source_options: dict[str, Any],
    min_tasks: int,
) -> Plan:
    """Assign every new time to one file and every touched chunk to exactly one task."""
    plan = Plan(layout=target.layout, axis_seconds=target.axis_seconds)
    good = sorted((scan for scan in scans if scan.ok), key=lambda scan: scan.stored.url)
    plan.failures.update({s.stored.url: str(s.error) for s in scans if not s.ok})
    reference_url = target.url
    owner: dict[int, tuple[str, str | None]] = {}
    last_existing = int(target.axis_seconds[-1]) if len(target.axis_seconds) else None
    on_axis = set(target.axis_seconds.tolist())
    for scan in good:
        url = scan.stored.url
        assert scan.layout is not None
        if plan.layout is None:
            plan.layout, reference_url = scan.layout, url
        problem = _layout_problem(scan.layout, plan.layout, reference_url)
        if problem:
            plan.failures[url] = f"{url}: {problem}"
            continue
        digests = scan.digests  # of every time another file of the run also holds
        new = np.setdiff1d(scan.seconds, scan.unchanged_seconds)
        early = [
            t
            for t in new.tolist()
            if t not in on_axis and last_existing is not None and t <= last_existing
        ]
        if early and last_existing is not None:
            plan.failures[url] = (
                f"{url}: time {_seconds_text(early[0])} falls before the store's last time "
                f"{_seconds_text(last_existing)} and is not on its axis; a store only grows at "
                "its end: ingest earlier times into a new store"
            )
            continue
        clash = [t for t in new.tolist() if t in owner and owner[t][1] != digests.get(t)]
        if clash:
            plan.failures[url] = (
                f"{url}: {_seconds_text(clash[0])} is also in {owner[clash[0]][0]} with other "
                f"values ({len(clash)} time(s) disagree); remove one of the two files"
            )
            continue
        take = np.array([t for t in new.tolist() if t not in owner], dtype="int64")
        for t in take.tolist():
            owner[t] = (url, digests.get(t))
        plan.contributions[url] = take
        plan.files[url] = scan.stored
    fresh = np.setdiff1d(plan.new_seconds, target.axis_seconds)
    plan.axis_seconds = np.concatenate([target.axis_seconds, fresh]).astype("int64")
    plan.tasks = _chunk_tasks(plan, target, time_chunk, source, source_options, min_tasks)
    return plan


def _chunk_tasks(
    plan: Plan,
    target: StoreTarget,
    time_chunk: int,
    source: SourceConfig,
    source_options: dict[str, Any],
    min_tasks: int,
) -> list[ChunkTask]:
    by_chunk: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    for url, seconds in plan.contributions.items():
        positions = positions_of(plan.axis_seconds, seconds)
        for chunk, chunk_positions in group_by_chunk(positions, time_chunk).items():
            by_chunk[chunk][url] = chunk_positions
    if not by_chunk or plan.layout is None:
        return []
    bytes_per_chunk = time_chunk * _bytes_per_time(plan.layout)
    max_per_batch = max(1, TASK_BYTES_BUDGET // max(1, bytes_per_chunk))
    sources = {chunk: tuple(sorted(files)) for chunk, files in by_chunk.items()}
    full_target = StoreTarget(
        url=target.url,
        storage_options=target.storage_options,
        layout=plan.layout,
        time_chunk=time_chunk,
        axis_seconds=plan.axis_seconds,
        committed_seconds=target.committed_seconds,
    )
    tasks = []
    for batch in batch_chunks(sources, max_per_batch, min_tasks):
        per_file: dict[str, list[np.ndarray]] = defaultdict(list)
        for chunk in batch:
            for url, positions in by_chunk[chunk].items():
                per_file[url].append(positions)
        pieces = []
        for url in sorted(per_file):
            positions = np.concatenate(per_file[url])
            pieces.append(Piece(plan.files[url], plan.axis_seconds[positions], positions))
        tasks.append(
            ChunkTask(tuple(batch), time_chunk, tuple(pieces), source, source_options, full_target)
        )
    return tasks


def _bytes_per_time(layout: StoreLayout) -> int:
    sizes = {
        "lat": len(layout.grid.lat),
        "lon": len(layout.grid.lon),
        "level": max(1, len(layout.grid.level)),
        "member": max(1, len(layout.grid.member)),
    }
    total = 0
    for var in layout.variables:
        total += 4 * int(np.prod([sizes[d] for d in var.dims if d != "time"]))
    return total


def axis_times(plan: Plan) -> np.ndarray:
    """The plan's time axis as datetime64[ns]."""
    return from_seconds(plan.axis_seconds)
