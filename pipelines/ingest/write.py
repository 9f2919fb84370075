"""Worker step 2: read the times of a chunk batch from their files, then write whole chunks."""

from __future__ import annotations

import logging
import time

import numpy as np
import xarray as xr

from pipelines.analysis_store import AnalysisStore, to_seconds
from pipelines.errors import ClimateError
from pipelines.ingest.decode import load, opened
from pipelines.ingest.regions import contiguous_runs, group_by_chunk, positions_of
from pipelines.ingest.tasks import ChunkResult, ChunkTask

log = logging.getLogger(__name__)


def _select(lazy: xr.Dataset, seconds: np.ndarray) -> xr.Dataset:
    """The times ``seconds`` of a file, as a slice when they are consecutive (no fancy copy)."""
    index = positions_of(to_seconds(lazy["time"].values), seconds)
    runs = contiguous_runs(index)
    if len(runs) == 1:
        return lazy.isel(time=slice(*runs[0]))
    return lazy.isel(time=index)


def _gather(task: ChunkTask) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every new value of the batch, in memory, ordered by store position."""
    parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    for piece in task.pieces:
        with opened(piece.stored, task.source, task.source_options) as (_, lazy):
            selected = load(_select(lazy, piece.seconds), piece.stored.url)
        values = {str(name): var.values for name, var in selected.data_vars.items()}
        parts.append((piece.positions, values))
    if len(parts) == 1:
        return parts[0]
    positions = np.concatenate([part[0] for part in parts])
    order = np.argsort(positions, kind="stable")
    names = parts[0][1].keys()
    merged = {name: np.concatenate([part[1][name] for part in parts])[order] for name in names}
    return positions[order], merged


def write_chunks(task: ChunkTask) -> ChunkResult:
    """Write the task's chunks; all reads finish before the first write, so a bad file leaves
    no partial chunk behind."""
    files = tuple(sorted({piece.stored.url for piece in task.pieces}))
    try:
        started = time.perf_counter()
        positions, values = _gather(task)
        read_done = time.perf_counter()
        store = AnalysisStore(task.target.url, task.target.storage_options)
        written = 0
        for start, stop in contiguous_runs(positions):
            lo, hi = np.searchsorted(positions, [start, stop])
            run = {name: data[lo:hi] for name, data in values.items()}
            store.write(run, start)
            written += sum(data.nbytes for data in run.values())
        if set(group_by_chunk(positions, task.time_chunk)) != set(task.chunks):
            raise RuntimeError(f"chunk batch {task.chunks} wrote outside its chunks")
        return ChunkResult(
            chunks=task.chunks,
            files=files,
            bytes_written=written,
            read_seconds=read_done - started,
            write_seconds=time.perf_counter() - read_done,
        )
    except Exception as exc:  # reported per file in the run summary; the run goes on
        log.info("chunks %s failed: %s", task.chunks, exc)
        message = str(exc) if isinstance(exc, ClimateError) else f"{type(exc).__name__}: {exc}"
        return ChunkResult(chunks=task.chunks, files=files, error=message)
