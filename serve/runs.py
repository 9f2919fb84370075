"""The committed forecast run one ingress replica holds in memory, and how it follows new runs.

:class:`RunHolder` keeps ONE reference to a :class:`HeldRun` (the run's identity and its
in-memory :class:`~serve.point_answer.RunView`). :meth:`RunHolder.refresh` reads the store's
pointer; when another run is committed it loads that run fully, and only then replaces the
reference in one assignment. A request that took the reference sees exactly one run from start
to end, whatever is committed meanwhile; a run that fails to load leaves the old one served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.errors import ClimateError, StoreError
from pipelines.forecast.store import CommittedRun, ForecastStore, open_forecast_store
from serve.metrics import ServeMetrics
from serve.point_answer import RunView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldRun:
    """A committed forecast run, loaded: what a request answers from."""

    run_id: str
    path: str  # runs/<run id>.<attempt>: a re-run of the same id is another attempt
    committed_at: datetime
    view: RunView

    @property
    def age_seconds(self) -> float:
        """Seconds since the run was committed."""
        return max(0.0, time.time() - self.committed_at.timestamp())


def load_run(
    url: str, committed: CommittedRun, storage_options: dict[str, Any] | None = None
) -> HeldRun:
    """Open one committed run and load its newest initial time into memory.

    Raises
    ------
    StoreError
        The run cannot be opened or is not a forecast run (the cause is kept).
    """
    try:
        dataset = open_forecast_store(url, committed.run_id, storage_options)
        view = RunView.from_dataset(dataset)
    except StoreError:
        raise
    except Exception as exc:  # zarr, xarray and the view raise many types: one at this edge
        raise StoreError(
            f"{url}: cannot load forecast run {committed.run_id} ({committed.path}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return HeldRun(
        run_id=committed.run_id,
        path=committed.path,
        committed_at=datetime.fromisoformat(committed.committed_at),
        view=view,
    )


class RunHolder:
    """The forecast run a replica serves, swapped whole when a newer one is committed.

    Parameters
    ----------
    url
        The forecast store.
    metrics
        Where loads (ok, failed) and the run served are counted.
    storage_options
        fsspec options for ``s3://`` stores.
    loader
        Loads one committed run (tests substitute a failing one); :func:`load_run` by default.
    """

    def __init__(
        self,
        url: str,
        metrics: ServeMetrics,
        storage_options: dict[str, Any] | None = None,
        loader: Callable[[str, CommittedRun, dict[str, Any] | None], HeldRun] = load_run,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.storage_options = storage_options
        self.loader = loader
        self.current: HeldRun | None = None  # the one reference requests take
        self.problem: str | None = "no forecast run loaded yet"
        self._failed_path: str | None = None

    def _pointer(self) -> CommittedRun | None:
        return ForecastStore(self.url, self.storage_options).current()

    async def refresh(self) -> bool:
        """Load the committed run if it is not the one held; True when the run changed.

        A failure (pointer unreadable, run unloadable) is logged and counted; the held run
        stays.
        """
        try:
            committed = await asyncio.to_thread(self._pointer)
        except ClimateError as exc:
            self._failed(f"cannot read the forecast store: {exc}", None)
            return False
        if committed is None:
            if self.current is None:
                self.problem = f"no forecast run committed in {self.url} yet"
            return False
        held = self.current
        if held is not None and held.path == committed.path:
            self.problem = None
            self._observe(held)
            return False
        try:
            loaded = await asyncio.to_thread(self.loader, self.url, committed, self.storage_options)
        except ClimateError as exc:
            self._failed(str(exc), committed.path)
            return False
        self.current = loaded  # the swap: one reference, fully loaded before it is visible
        self.problem = None
        self._failed_path = None
        self.metrics.run_loads.inc(tags={"outcome": "ok"})
        if held is not None:
            self.metrics.run_served.set(0, tags={"run_id": held.run_id})
        self._observe(loaded)
        log.info("serving forecast run %s (%s)", loaded.run_id, loaded.path)
        return True

    def _observe(self, held: HeldRun) -> None:
        self.metrics.run_served.set(held.committed_at.timestamp(), tags={"run_id": held.run_id})
        self.metrics.run_age.set(held.age_seconds)

    def _failed(self, reason: str, path: str | None) -> None:
        self.metrics.run_loads.inc(tags={"outcome": "failed"})
        kept = f"; still serving {self.current.run_id}" if self.current else ""
        self.problem = f"forecast run not loaded: {reason}{kept}"
        if path is None or path != self._failed_path:  # once per run, not every period
            log.warning("%s", self.problem)
        self._failed_path = path
