"""What the operations metrics report, read from the run and ingest ledgers.

The ledgers are the record of every install (the scheduler, a Kubernetes cron job or a run by
hand all write them), so the newest nightly outcome and the newest ingested valid time are read
there rather than kept by whichever process ran the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, Table, func, select

from pipelines.db import transaction
from schemas.tables import IngestFile, Run

_RUNS: Table = Run.__table__  # type: ignore[assignment]
_FILES: Table = IngestFile.__table__  # type: ignore[assignment]
NIGHTLY_KIND = "nightly"


@dataclass(frozen=True)
class OpsStatus:
    """The newest nightly success and failure, and the newest valid time of each store.

    ``None`` (or a store left out) where the ledgers hold no such record.
    """

    nightly_last_success: datetime | None = None
    nightly_last_failure: datetime | None = None
    ingest_latest: dict[str, datetime] = field(default_factory=dict)


def read_ops_status(engine: Engine) -> OpsStatus:
    """Read the operations status from the ledgers in one read-only transaction.

    Parameters
    ----------
    engine
        A migrated engine holding the ``runs`` and ``ingest_files`` tables.

    Returns
    -------
    OpsStatus
        Nightly runs (kind ``nightly``: the job's own rows and the scheduler's, missed due times
        included) by when they finished; committed ingest files by their last valid time.

    Raises
    ------
    SinkError
        The database cannot be reached or the tables cannot be read.
    """
    finished = (
        select(_RUNS.c.status, func.max(_RUNS.c.finished_at))
        .where(_RUNS.c.kind == NIGHTLY_KIND, _RUNS.c.status.in_(("succeeded", "failed")))
        .group_by(_RUNS.c.status)
    )
    ingested = (
        select(_FILES.c.store_url, func.max(_FILES.c.time_end))
        .where(_FILES.c.status == "committed")
        .group_by(_FILES.c.store_url)
    )
    with transaction(engine, write=False) as conn:
        last = {status: when for status, when in conn.execute(finished)}
        stores = {url: end for url, end in conn.execute(ingested) if end is not None}
    return OpsStatus(last.get("succeeded"), last.get("failed"), stores)
