"""Worker step 2: decode the times of a chunk batch from their files, then write whole chunks.

Every piece is decoded before the first write, so a file that fails to decode leaves nothing of
itself behind; the other files of the batch are still written.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import xarray as xr

from pipelines.analysis_store import AnalysisStore, to_seconds
from pipelines.errors import describe
from pipelines.ingest.decode import load, opened
from pipelines.ingest.regions import contiguous_runs, group_by_chunk, positions_of, write_plan
from pipelines.ingest.tasks import ChunkResult, ChunkTask, Piece

log = logging.getLogger(__name__)
Values = dict[str, np.ndarray]


def _select(lazy: xr.Dataset, seconds: np.ndarray) -> xr.Dataset:
    """The times ``seconds`` of a file, as a slice when they are consecutive (no fancy copy)."""
    index = positions_of(to_seconds(lazy["time"].values), seconds)
    runs = contiguous_runs(index)
    if len(runs) == 1:
        return lazy.isel(time=slice(*runs[0]))
    return lazy.isel(time=index)


def _decode(task: ChunkTask) -> tuple[list[tuple[Piece, Values]], dict[str, str]]:
    """Every piece's values, in memory; and the files that failed, with the reason."""
    decoded: list[tuple[Piece, Values]] = []
    failed: dict[str, str] = {}
    for piece in task.pieces:
        url = piece.stored.url
        try:
            with opened(piece.stored, task.source, task.source_options) as (_, lazy):
                selected = load(_select(lazy, piece.seconds), url)
        except Exception as exc:  # reported per file in the run summary; the run goes on
            log.info("decoding %s failed: %s", url, exc)
            failed[url] = describe(exc)
            continue
        decoded.append((piece, {str(name): var.values for name, var in selected.data_vars.items()}))
    return decoded, failed


def _regions(decoded: list[tuple[Piece, Values]], time_chunk: int) -> list[tuple[int, Values]]:
    """Region writes of the decoded pieces; views of their arrays except where pieces meet."""
    plan = write_plan([piece.positions for piece, _ in decoded], time_chunk)
    regions = []
    for start, parts in plan:
        if len(parts) == 1:
            index, lo, hi = parts[0]
            values = {name: data[lo:hi] for name, data in decoded[index][1].items()}
        else:
            names = decoded[parts[0][0]][1].keys()
            values = {
                name: np.concatenate([decoded[i][1][name][lo:hi] for i, lo, hi in parts])
                for name in names
            }
        regions.append((start, values))
    return regions


def write_chunks(task: ChunkTask) -> ChunkResult:
    """Write the task's chunks from every file that decodes; nothing is written before all
    pieces are decoded."""
    files = tuple(sorted({piece.stored.url for piece in task.pieces}))
    try:
        started = time.perf_counter()
        decoded, failed = _decode(task)
        read_done = time.perf_counter()
        touched = {
            c for piece, _ in decoded for c in group_by_chunk(piece.positions, task.time_chunk)
        }
        if not touched <= set(task.chunks):
            raise RuntimeError(f"chunk batch {task.chunks} would write outside its chunks")
        store = AnalysisStore(task.target.url, task.target.storage_options)
        written = store.write_regions(_regions(decoded, task.time_chunk)) if decoded else 0
        return ChunkResult(
            chunks=task.chunks,
            files=files,
            failed=failed,
            bytes_written=written,
            read_seconds=read_done - started,
            write_seconds=time.perf_counter() - read_done,
        )
    except Exception as exc:  # reported per file in the run summary; the run goes on
        log.info("chunks %s failed: %s", task.chunks, exc)
        return ChunkResult(chunks=task.chunks, files=files, error=describe(exc))
