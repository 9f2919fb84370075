"""Chunk and region arithmetic for time-appending writes (pure functions, property-tested)."""

from __future__ import annotations

import itertools

import numpy as np

from pipelines.errors import ConflictError


def merge_time_axis(existing: np.ndarray, incoming: np.ndarray) -> np.ndarray:
    """The store's new time axis: ``existing`` followed by the incoming times it lacks.

    Times already on the axis are fine (they are rewritten); new times must come after the last
    existing one, since the axis only grows at its end.
    """
    existing = np.asarray(existing, dtype="datetime64[ns]")
    fresh = np.setdiff1d(np.asarray(incoming, dtype="datetime64[ns]"), existing)
    if len(existing) and len(fresh) and fresh[0] <= existing[-1]:
        raise ConflictError(
            f"time {np.datetime_as_string(fresh[0], unit='s')} falls before the store's last time "
            f"{np.datetime_as_string(existing[-1], unit='s')} and is not on its axis; a store only "
            "grows at its end: ingest earlier times into a new store"
        )
    return np.concatenate([existing, fresh])


def positions_of(axis: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of each of ``times`` on the sorted ``axis`` (all must be present)."""
    positions = np.searchsorted(axis, times)
    if len(times) and (positions.max() >= len(axis) or not np.array_equal(axis[positions], times)):
        raise ValueError("some times are not on the axis")
    return positions.astype("int64")


def chunk_of(positions: np.ndarray, chunk_length: int) -> np.ndarray:
    """The chunk index along time of each position."""
    return np.asarray(positions, dtype="int64") // chunk_length


def group_by_chunk(positions: np.ndarray, chunk_length: int) -> dict[int, np.ndarray]:
    """Positions grouped by the time chunk that holds them (each group sorted)."""
    positions = np.unique(np.asarray(positions, dtype="int64"))
    chunks = chunk_of(positions, chunk_length)
    return {int(c): positions[chunks == c] for c in np.unique(chunks)}


def contiguous_runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique positions as half-open ``(start, stop)`` runs of consecutive values."""
    positions = np.unique(np.asarray(positions, dtype="int64"))
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(positions)]])
    return [
        (int(positions[a]), int(positions[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)
    ]


def batch_chunks(
    chunk_sources: dict[int, tuple[str, ...]], max_per_batch: int, min_batches: int
) -> list[list[int]]:
    """Group consecutive chunks that read the same files into batches for one task each.

    A batch never exceeds ``max_per_batch`` chunks, and batches are kept small enough that there
    are at least ``min_batches`` of them where the chunk count allows, so every worker has work.
    Every chunk lands in exactly one batch.
    """
    ordered = sorted(chunk_sources)
    if not ordered:
        return []
    limit = max(1, min(max_per_batch, len(ordered) // max(1, min_batches)))
    batches: list[list[int]] = [[ordered[0]]]
    for chunk in ordered[1:]:
        current = batches[-1]
        same_files = chunk_sources[chunk] == chunk_sources[current[-1]]
        if same_files and chunk == current[-1] + 1 and len(current) < limit:
            current.append(chunk)
        else:
            batches.append([chunk])
    return batches


Part = tuple[int, int, int]  # (piece, lo, hi): rows lo:hi of a piece's arrays


def write_plan(pieces: list[np.ndarray], chunk_length: int) -> list[tuple[int, list[Part]]]:
    """How to write pieces whose sorted positions are ``pieces``: a list of ``(start, parts)``,
    each one region write of the parts' rows, concatenated, at positions ``start:start+n``.

    A region holds several parts only where pieces meet inside one chunk (only that chunk is
    assembled); elsewhere each piece is written from its own rows, without a copy.
    """
    segments: list[tuple[int, int, int, int]] = []  # start, stop, piece, lo
    for piece, positions in enumerate(pieces):
        offset = 0
        for start, stop in contiguous_runs(positions):
            first = min(stop, -(-start // chunk_length) * chunk_length)
            last = max(first, (stop // chunk_length) * chunk_length)
            cuts = [start, first, last, stop]
            for a, b in itertools.pairwise(cuts):
                if a < b:
                    segments.append((a, b, piece, offset + a - start))
            offset += stop - start
    segments.sort()
    regions: list[tuple[int, int, list[Part]]] = []
    for start, stop, piece, lo in segments:  # parts meeting inside a chunk: one region
        part = (piece, lo, lo + stop - start)
        if regions and regions[-1][1] == start and start % chunk_length:
            regions[-1] = (regions[-1][0], stop, [*regions[-1][2], part])
        else:
            regions.append((start, stop, [part]))
    merged: list[tuple[int, int, list[Part]]] = []
    for start, stop, parts in regions:  # rows of one piece that follow on: one region
        if merged and len(parts) == 1 and len(merged[-1][2]) == 1:
            last_start, last_stop, (previous,) = merged[-1]
            if last_stop == start and previous[0] == parts[0][0] and previous[2] == parts[0][1]:
                merged[-1] = (last_start, stop, [(previous[0], previous[1], parts[0][2])])
                continue
        merged.append((start, stop, parts))
    return [(start, parts) for start, _, parts in merged]
