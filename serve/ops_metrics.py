"""Operations metrics: the nightly's outcome, the ingest's newest valid time, database errors.

Each ingress replica reads them from the ledgers every ``refresh_seconds`` and exports them
through Ray's metrics agent, next to ``climate_serve_*`` (so one Prometheus scrape of Ray sees
them all): ``climate_nightly_last_success_timestamp_seconds``,
``climate_nightly_last_failure_timestamp_seconds``,
``climate_ingest_latest_valid_time_seconds{store}`` and ``climate_database_errors_total``.
Replicas report the same values; the alert rules take the maximum.
"""

from __future__ import annotations

import logging

from ray.util.metrics import Counter, Gauge
from sqlalchemy import Engine

from pipelines.db import make_engine
from pipelines.errors import SinkError
from pipelines.ops_status import read_ops_status

log = logging.getLogger(__name__)
COMPONENT = "ingress"


class OpsMetrics:
    """The operations gauges of one replica and the poll that keeps them current.

    Parameters
    ----------
    database_url
        The database holding the run and ingest ledgers (the application's ``DATABASE_URL``).
    database_errors
        The replica's ``climate_database_errors_total`` (:class:`serve.metrics.ServeMetrics`).
    """

    def __init__(self, database_url: str, database_errors: Counter) -> None:
        self.database_url = database_url
        self.database_errors = database_errors
        self.nightly_success = Gauge(
            "climate_nightly_last_success_timestamp_seconds",
            description="When the newest successful nightly run finished (unix seconds).",
        )
        self.nightly_failure = Gauge(
            "climate_nightly_last_failure_timestamp_seconds",
            description="When the newest failed (or missed) nightly run finished (unix seconds).",
        )
        self.ingest_latest = Gauge(
            "climate_ingest_latest_valid_time_seconds",
            description="Newest valid time committed to an analysis store (unix seconds).",
            tag_keys=("store",),
        )
        self._engine: Engine | None = None
        self._failing = False  # warn once per outage, not once per poll

    def poll(self) -> bool:
        """Read the ledgers and set the gauges (blocking: call from a worker thread).

        Returns
        -------
        bool
            Whether the ledgers were read; a database error is counted and logged instead.
        """
        try:
            if self._engine is None:
                self._engine = make_engine(self.database_url, check=False)
            status = read_ops_status(self._engine)
        except SinkError as exc:
            self.database_errors.inc(tags={"component": COMPONENT})
            log.log(logging.DEBUG if self._failing else logging.WARNING, "%s", exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("the database answers again: operations metrics are current")
        self._failing = False
        if status.nightly_last_success is not None:
            self.nightly_success.set(status.nightly_last_success.timestamp())
        if status.nightly_last_failure is not None:
            self.nightly_failure.set(status.nightly_last_failure.timestamp())
        for store, latest in status.ingest_latest.items():
            self.ingest_latest.set(latest.timestamp(), tags={"store": store})
        return True

    def close(self) -> None:
        """Close the database connections."""
        if self._engine is not None:
            self._engine.dispose()
