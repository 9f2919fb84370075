"""The operations status read from the ledgers: newest nightly success and failure, newest
ingested valid time per store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from pipelines.db import make_engine
from pipelines.errors import SinkError
from pipelines.ledger import IngestLedger, RunLedger
from pipelines.ops_status import OpsStatus, read_ops_status


def _seconds(*hours: int) -> list[int]:
    return [int(datetime(2026, 1, 2, h, tzinfo=UTC).timestamp()) for h in hours]


def test_an_empty_ledger_reports_nothing(engine: Engine) -> None:
    assert read_ops_status(engine) == OpsStatus()


def test_newest_outcomes_and_valid_times(engine: Engine) -> None:
    runs, files = RunLedger(engine), IngestLedger(engine)
    for run_id, status in [
        ("nightly-2026-01-01", "succeeded"),
        ("nightly-2026-01-02", "failed"),
        ("schedule-2026-01-03T063000", "failed"),  # the scheduler's missed due time
        ("nightly-2026-01-04", "succeeded"),
    ]:
        runs.start("nightly", {}, run_id)
        runs.finish(run_id, status)
    runs.start("nightly", {}, "nightly-2026-01-05")  # still running: not an outcome
    runs.start("forecast", {}, "forecast-1")
    runs.finish("forecast-1", "failed")  # another kind: not the nightly's
    runs.start("ingest", {}, "ingest-1")
    files.mark_committed("ingest-1", "s3://a/analysis.zarr", "a1.grib", 1, "f", None, _seconds(0))
    files.mark_committed("ingest-1", "s3://a/analysis.zarr", "a2.grib", 1, "f", None, _seconds(6))
    files.mark_committed("ingest-1", "s3://b/analysis.zarr", "b1.grib", 1, "f", None, _seconds(3))
    files.mark_pending("ingest-1", "s3://b/analysis.zarr", "b2.grib", 1, "f")  # not committed

    status = read_ops_status(engine)

    def finished(run_id: str) -> datetime | None:
        record = runs.get(run_id)
        assert record is not None
        return record.finished_at

    assert status.nightly_last_success == finished("nightly-2026-01-04")
    assert status.nightly_last_failure == finished("schedule-2026-01-03T063000")
    assert status.nightly_last_success is not None
    assert status.nightly_last_success.tzinfo is not None
    assert status.ingest_latest == {
        "s3://a/analysis.zarr": datetime(2026, 1, 2, 6, tzinfo=UTC),
        "s3://b/analysis.zarr": datetime(2026, 1, 2, 3, tzinfo=UTC),
    }


def test_an_unreachable_database_is_a_sink_error() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:9/none", check=False)
    with pytest.raises(SinkError, match=r"127\.0\.0\.1"):
        read_ops_status(engine)
