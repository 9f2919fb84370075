"""The ingress's operations poll: database errors are counted and logged once per outage, the
poll goes on, and it recovers when the ledgers can be read again. (What the gauges export is
checked through a real Prometheus in tests/deploy/test_monitoring.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipelines.db import make_engine, migrate
from serve.metrics import ServeMetrics
from serve.ops_metrics import OpsMetrics


def test_the_poll_survives_an_outage_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'climate.db'}"  # no tables yet: the ledgers cannot be read
    ops = OpsMetrics(url, ServeMetrics().database_errors)
    caplog.set_level(logging.DEBUG, logger="serve.ops_metrics")
    try:
        assert [ops.poll(), ops.poll()] == [False, False]
        levels = [r.levelno for r in caplog.records if r.name == "serve.ops_metrics"]
        assert levels == [logging.WARNING, logging.DEBUG]  # once per outage
        assert "runs" in caplog.records[0].getMessage()

        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        caplog.clear()
        assert ops.poll() is True
        assert [r.getMessage() for r in caplog.records if r.name == "serve.ops_metrics"] == [
            "the database answers again: operations metrics are current"
        ]
        caplog.clear()
        assert ops.poll() is True
        assert [r for r in caplog.records if r.name == "serve.ops_metrics"] == []
    finally:
        ops.close()
