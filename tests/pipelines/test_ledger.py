"""The run ledger and the ingest ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from pipelines.errors import SinkError
from pipelines.ledger import FileRecord, IngestLedger, RunLedger, RunRecord
from schemas.tables import IngestFile

STORE = "s3://bucket/analysis.zarr"
OTHER_STORE = "file:///data/other.zarr"
T0 = 1_551_398_400  # 2019-03-01T00:00:00Z


@pytest.fixture
def runs(engine: Engine) -> RunLedger:
    return RunLedger(engine)


@pytest.fixture
def ledger(engine: Engine) -> IngestLedger:
    return IngestLedger(engine)


@pytest.fixture
def run_id(runs: RunLedger) -> str:
    return runs.start("ingest", {"store": STORE})


def _rows(engine: Engine, store_url: str = STORE) -> int:
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(IngestFile).where(IngestFile.store_url == store_url)
        return int(conn.scalar(stmt) or 0)


# --- runs -------------------------------------------------------------------------------------


def test_run_lifecycle(runs: RunLedger) -> None:
    run_id = runs.start("ingest", {"sources": ["a.grib"], "chunks": {"time": 24}})
    assert len(run_id) == 32
    int(run_id, 16)  # a uuid4 hex

    started = runs.get(run_id)
    assert isinstance(started, RunRecord)
    assert started.status == "running"
    assert started.kind == "ingest"
    assert started.config == {"sources": ["a.grib"], "chunks": {"time": 24}}
    assert started.started_at.tzinfo is not None
    assert started.started_at.utcoffset() == UTC.utcoffset(None)
    assert started.finished_at is None
    assert started.summary is None

    runs.finish(run_id, "partial", summary={"files": 3, "failed": ["b.grib"]}, error="b: bad")
    done = runs.get(run_id)
    assert done is not None
    assert done.status == "partial"
    assert done.summary == {"files": 3, "failed": ["b.grib"]}
    assert done.error == "b: bad"
    assert done.finished_at is not None
    assert done.finished_at >= done.started_at
    with pytest.raises(AttributeError):
        done.status = "failed"  # type: ignore[misc]


def test_get_unknown_run_is_none(runs: RunLedger) -> None:
    assert runs.get("nope") is None


def test_rerun_of_the_same_id_replaces(runs: RunLedger) -> None:
    run_id = runs.start("train", {"lr": 0.1}, run_id="nightly-2019-03-01")
    runs.finish(run_id, "failed", summary={"epochs": 1}, error="diverged")
    again = runs.start("train", {"lr": 0.01}, run_id="nightly-2019-03-01")
    assert again == run_id
    record = runs.get(run_id)
    assert record is not None
    assert (record.status, record.config, record.summary, record.error) == (
        "running",
        {"lr": 0.01},
        None,
        None,
    )
    assert record.finished_at is None
    assert [r.run_id for r in runs.list()] == [run_id]


def test_list_newest_first_by_kind_with_limit(runs: RunLedger) -> None:
    ids = [runs.start(kind, {"i": i}) for i, kind in enumerate(["ingest", "train", "ingest"])]
    assert [r.run_id for r in runs.list()] == ids[::-1]
    assert [r.run_id for r in runs.list(kind="ingest")] == [ids[2], ids[0]]
    assert [r.run_id for r in runs.list(limit=1)] == [ids[2]]
    assert runs.list(kind="forecast") == []


def test_run_arguments_are_checked(runs: RunLedger) -> None:
    with pytest.raises(ValueError, match="run kind 'backfill'"):
        runs.start("backfill", {})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        runs.start("ingest", {"when": datetime.now(UTC)})
    run_id = runs.start("ingest", {})
    with pytest.raises(ValueError, match="final run status 'running'"):
        runs.finish(run_id, "running")
    with pytest.raises(SinkError, match=r"call RunLedger\.start"):
        runs.finish("never-started", "succeeded")


# --- ingest files ----------------------------------------------------------------------------


def test_pending_is_not_committed(ledger: IngestLedger, run_id: str) -> None:
    ledger.mark_pending(run_id, STORE, "a.grib", 100, "etag-a")
    assert ledger.committed(STORE) == []
    assert ledger.find_committed(STORE, "a.grib", "etag-a") is None
    assert ledger.committed_times(STORE).size == 0


def test_commit_records_times_and_is_idempotent(
    engine: Engine, ledger: IngestLedger, run_id: str
) -> None:
    times = [T0 + 7200, T0, T0 + 3600, T0]
    ledger.mark_pending(run_id, STORE, "a.grib", 100, "etag-a")
    ledger.mark_committed(run_id, STORE, "a.grib", 100, "etag-a", "ab" * 32, times)
    ledger.mark_committed(run_id, STORE, "a.grib", 100, "etag-a", "ab" * 32, times)
    assert _rows(engine) == 1

    [record] = ledger.committed(STORE)
    assert isinstance(record, FileRecord)
    assert record == ledger.find_committed(STORE, "a.grib", "etag-a")
    assert record.status == "committed"
    assert record.times == (T0, T0 + 3600, T0 + 7200)
    assert record.n_times == 3
    assert record.time_start == datetime(2019, 3, 1, tzinfo=UTC)
    assert record.time_end == datetime(2019, 3, 1, 2, tzinfo=UTC)
    assert record.checksum == "ab" * 32
    assert record.run_id == run_id
    assert record.error is None
    assert record.updated_at.tzinfo is not None
    assert ledger.find_committed(STORE, "a.grib", "other-etag") is None
    assert ledger.find_committed(OTHER_STORE, "a.grib", "etag-a") is None


def test_commit_without_pending_and_with_no_times(ledger: IngestLedger, run_id: str) -> None:
    ledger.mark_committed(run_id, STORE, "empty.grib", 0, "size0-mtime1", None, [])
    [record] = ledger.committed(STORE)
    assert (record.n_times, record.times, record.time_start, record.time_end) == (0, (), None, None)


def test_committed_times_are_sorted_unique_int64(ledger: IngestLedger, run_id: str) -> None:
    ledger.mark_committed(run_id, STORE, "b.grib", 1, "b", None, np.array([T0 + 20, T0 + 10]))
    ledger.mark_committed(run_id, STORE, "a.grib", 1, "a", None, [T0 + 10, T0])
    ledger.mark_failed(run_id, STORE, "c.grib", 1, "c", "decode error")
    ledger.mark_pending(run_id, STORE, "d.grib", 1, "d")
    ledger.mark_committed(run_id, OTHER_STORE, "z.grib", 1, "z", None, [T0 - 10])

    times = ledger.committed_times(STORE)
    assert times.dtype == np.int64
    np.testing.assert_array_equal(times, [T0, T0 + 10, T0 + 20])
    assert [r.file_url for r in ledger.committed(STORE)] == ["a.grib", "b.grib"]
    assert ledger.committed_times("s3://nothing/here.zarr").dtype == np.int64


def test_failed_then_committed(engine: Engine, ledger: IngestLedger, run_id: str) -> None:
    ledger.mark_pending(run_id, STORE, "a.grib", 100, "etag-a")
    ledger.mark_failed(run_id, STORE, "a.grib", 100, "etag-a", "SourceError: truncated")
    assert ledger.committed(STORE) == []
    with engine.connect() as conn:
        row = conn.execute(select(IngestFile.status, IngestFile.error)).one()
    assert tuple(row) == ("failed", "SourceError: truncated")

    ledger.mark_pending(run_id, STORE, "a.grib", 100, "etag-a")
    ledger.mark_committed(run_id, STORE, "a.grib", 100, "etag-a", None, [T0])
    record = ledger.find_committed(STORE, "a.grib", "etag-a")
    assert record is not None
    assert record.error is None
    assert _rows(engine) == 1


def test_committed_then_failed_no_longer_counts(ledger: IngestLedger, runs: RunLedger) -> None:
    first = runs.start("ingest", {})
    ledger.mark_committed(first, STORE, "a.grib", 100, "etag-a", None, [T0])
    second = runs.start("ingest", {})
    ledger.mark_pending(second, STORE, "a.grib", 100, "etag-a")
    assert ledger.committed_times(STORE).size == 0  # being rewritten: not trusted
    ledger.mark_failed(second, STORE, "a.grib", 100, "etag-a", "disk full")
    assert ledger.find_committed(STORE, "a.grib", "etag-a") is None
    ledger.mark_committed(second, STORE, "a.grib", 100, "etag-a", None, [T0])
    record = ledger.find_committed(STORE, "a.grib", "etag-a")
    assert record is not None
    assert record.run_id == second


def test_changed_file_supersedes_its_old_fingerprint(
    engine: Engine, ledger: IngestLedger, run_id: str
) -> None:
    ledger.mark_committed(run_id, STORE, "a.grib", 100, "etag-old", None, [T0])
    ledger.mark_failed(run_id, STORE, "a.grib", 120, "etag-new", "conflict")
    assert ledger.find_committed(STORE, "a.grib", "etag-old") is not None  # still the data
    ledger.mark_committed(run_id, STORE, "a.grib", 120, "etag-new", None, [T0, T0 + 60])
    assert [r.fingerprint for r in ledger.committed(STORE)] == ["etag-new"]
    assert _rows(engine) == 1


def test_forget_store(engine: Engine, ledger: IngestLedger, run_id: str) -> None:
    ledger.mark_committed(run_id, STORE, "a.grib", 1, "a", None, [T0])
    ledger.mark_failed(run_id, STORE, "b.grib", 1, "b", "bad")
    ledger.mark_committed(run_id, OTHER_STORE, "a.grib", 1, "a", None, [T0])
    assert ledger.forget_store(STORE) == 2
    assert _rows(engine, STORE) == 0
    assert len(ledger.committed(OTHER_STORE)) == 1
    assert ledger.forget_store(STORE) == 0


def test_file_arguments_are_checked(ledger: IngestLedger, run_id: str) -> None:
    with pytest.raises(ValueError, match="integer epoch seconds"):
        ledger.mark_committed(run_id, STORE, "a.grib", 1, "a", None, [1.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="integer epoch seconds"):
        ledger.mark_committed(
            run_id, STORE, "a.grib", 1, "a", None, np.array(["2019-03-01"], dtype="datetime64[s]")
        )
    with pytest.raises(ValueError, match="over the ledger's limit of 128"):
        ledger.mark_pending(run_id, STORE, "a.grib", 1, "x" * 129)
    with pytest.raises(ValueError, match="negative"):
        ledger.mark_pending(run_id, STORE, "a.grib", -1, "a")


def test_unknown_run_is_refused(ledger: IngestLedger) -> None:
    with pytest.raises(SinkError, match="could not run a transaction"):
        ledger.mark_pending("no-such-run", STORE, "a.grib", 1, "a")


def test_concurrent_commits_of_one_file_leave_one_row(
    engine: Engine, ledger: IngestLedger, run_id: str
) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def commit(i: int) -> None:
        try:
            barrier.wait()
            ledger.mark_committed(run_id, STORE, "a.grib", 100, "etag-a", None, [T0 + i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _rows(engine) == 1
    [record] = ledger.committed(STORE)
    assert record.n_times == 1
    assert record.times[0] in {T0 + i for i in range(6)}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    files=st.lists(
        st.lists(st.integers(min_value=0, max_value=4_102_444_800), max_size=20),
        min_size=1,
        max_size=5,
    )
)
def test_committed_times_is_the_union(
    ledger: IngestLedger, run_id: str, files: list[list[int]]
) -> None:
    store = f"memory://{uuid.uuid4().hex}"
    for i, times in enumerate(files):
        ledger.mark_committed(run_id, store, f"f{i}.grib", 1, "fp", None, times)
    expected = np.unique(np.array([t for ts in files for t in ts], dtype=np.int64))
    np.testing.assert_array_equal(ledger.committed_times(store), expected)
