"""Property tests of the chunk and region arithmetic behind the parallel writes."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.errors import ConflictError
from pipelines.ingest.regions import (
    batch_chunks,
    contiguous_runs,
    group_by_chunk,
    merge_time_axis,
    positions_of,
    write_plan,
)

positions = st.lists(st.integers(0, 5000), max_size=300).map(lambda v: np.array(v, dtype="int64"))


@given(positions, st.integers(1, 100))
def test_every_position_in_exactly_one_chunk(values: np.ndarray, length: int) -> None:
    groups = group_by_chunk(values, length)
    flat = np.concatenate(list(groups.values())) if groups else np.empty(0, dtype="int64")
    assert sorted(flat.tolist()) == sorted(set(values.tolist()))
    for chunk, members in groups.items():
        assert np.all(members // length == chunk)
        assert np.all(members >= chunk * length) and np.all(members < (chunk + 1) * length)


@given(positions)
def test_runs_cover_exactly_the_positions(values: np.ndarray) -> None:
    runs = contiguous_runs(values)
    covered = [p for start, stop in runs for p in range(start, stop)]
    assert covered == sorted(set(values.tolist()))
    for (_, stop), (next_start, _) in pairwise(runs):
        assert next_start > stop, "runs are maximal: a gap separates them"


@given(
    st.dictionaries(
        st.integers(0, 200), st.sampled_from([("a",), ("b",), ("a", "b")]), max_size=60
    ),
    st.integers(1, 10),
    st.integers(1, 8),
)
def test_batches_partition_chunks_and_respect_limits(
    sources: dict[int, tuple[str, ...]], max_per_batch: int, min_batches: int
) -> None:
    batches = batch_chunks(sources, max_per_batch, min_batches)
    flat = [chunk for batch in batches for chunk in batch]
    assert sorted(flat) == sorted(sources), "every chunk in exactly one batch"
    for batch in batches:
        assert len(batch) <= max_per_batch
        assert all(b == a + 1 for a, b in pairwise(batch))
        assert len({sources[c] for c in batch}) == 1, "a batch reads one set of files"
    if sources:
        assert len(batches) >= min(min_batches, len(sources))


@given(st.lists(st.integers(0, 3), max_size=200), st.integers(1, 30))
def test_write_plan_writes_every_position_once_and_copies_only_where_pieces_meet(
    owners: list[int], length: int
) -> None:
    """Positions 0..n-1 each owned by piece ``owners[p]`` (3 means written by nobody)."""
    pieces = [np.flatnonzero(np.array([*owners, -1]) == piece) for piece in range(3)]
    regions = write_plan(pieces, length)
    written = []
    for start, parts in regions:
        rows = [int(pieces[i][r]) for i, lo, hi in parts for r in range(lo, hi)]
        assert rows == list(range(start, start + len(rows))), "parts follow on, row for row"
        written += rows
        if len(parts) > 1:
            assert (start + len(rows) - 1) // length == start // length, "assembled in one chunk"
    assert sorted(written) == [p for p, owner in enumerate(owners) if owner < 3]
    assert len(written) == len(set(written)), "no position written twice"


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 20))
def test_merge_appends_and_positions_round_trip(existing: int, fresh: int, overlap: int) -> None:
    start = np.datetime64("2020-01-01T00", "ns")
    hour = np.timedelta64(3600, "s")
    old = start + np.arange(existing) * hour
    new = start + np.arange(max(0, existing - overlap), existing + fresh) * hour
    axis = merge_time_axis(old, new)
    assert len(axis) == existing + fresh
    assert np.all(np.diff(axis) > np.timedelta64(0, "ns"))
    assert np.array_equal(axis[:existing], old)
    assert np.array_equal(axis[positions_of(axis, new)], new)


def test_merge_refuses_backfill() -> None:
    hours = np.array(["2020-01-01T00", "2020-01-01T02"], dtype="datetime64[ns]")
    with pytest.raises(ConflictError, match="only grows at its end"):
        merge_time_axis(hours, np.array(["2020-01-01T01"], dtype="datetime64[ns]"))
