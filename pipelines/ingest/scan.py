"""Worker step 1: check one file from its metadata against the store, describe what it holds.

Only the times the store already holds (to compare values) and the times other files of the
run also hold (to digest them) are decoded here; every other value is decoded once, by the
write step, which validates a file's values before writing any of them.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import xarray as xr

from pipelines.analysis_store import AnalysisStore, to_seconds
from pipelines.errors import ConflictError, SchemaError, describe
from pipelines.ingest.decode import load, opened, time_digests
from pipelines.ingest.regions import positions_of
from pipelines.ingest.tasks import ScanResult, ScanTask, StoreTarget
from pipelines.storage import checksum_of
from pipelines.store_layout import layout_of

log = logging.getLogger(__name__)


def _check_layout(dataset: xr.Dataset, target: StoreTarget, url: str) -> None:
    if target.layout is None:
        return
    layout = layout_of(dataset)
    difference = layout.grid.difference(target.layout.grid)
    if difference:
        raise SchemaError(
            f"{url}: grid does not match the store ({difference}); ingest it into another "
            "store, or regrid it to the store's grid first"
        )
    if set(layout.names) != set(target.layout.names):
        raise SchemaError(
            f"{url}: provides variables {list(layout.names)} but the store holds "
            f"{list(target.layout.names)}; ingest the same variables, or use another store"
        )
    store_dims = {var.name: var.dims for var in target.layout.variables}
    for var in layout.variables:
        if store_dims[var.name] != var.dims:
            raise SchemaError(
                f"{url}: {var.name} has dimensions {var.dims} but the store has "
                f"{store_dims[var.name]}; ingest it into another store"
            )


def _unchanged_times(
    lazy: xr.Dataset, seconds: np.ndarray, target: StoreTarget, url: str
) -> np.ndarray:
    """Times this file shares with committed store data; raises if any value differs."""
    shared = np.intersect1d(seconds, target.committed_seconds)
    if not len(shared):
        return shared
    store = AnalysisStore(target.url, target.storage_options)
    positions = positions_of(target.axis_seconds, shared)
    existing = store.read(tuple(str(name) for name in lazy.data_vars), positions)
    dataset = load(lazy.isel(time=positions_of(seconds, shared)), url)
    for name, stored_values in existing.items():
        incoming = dataset[str(name)].values
        if not np.array_equal(incoming, stored_values, equal_nan=True):
            bad = [
                i
                for i in range(len(shared))
                if not np.array_equal(incoming[i], stored_values[i], equal_nan=True)
            ]
            diff = np.nanmax(np.abs(incoming[bad[0]] - stored_values[bad[0]]))
            when = np.datetime_as_string(shared[bad[0]].astype("datetime64[s]"), unit="s")
            raise ConflictError(
                f"{url}: {name} at {when} differs from what the store already holds "
                f"(max |difference| {diff:.6g}, {len(bad)} time(s) differ); the store keeps its "
                "values: fix the file, or ingest it into another store"
            )
    return shared


def _digests(lazy: xr.Dataset, seconds: np.ndarray, wanted: np.ndarray, url: str) -> dict[int, str]:
    wanted = np.intersect1d(seconds, wanted)
    if not len(wanted):
        return {}
    return time_digests(load(lazy.isel(time=positions_of(seconds, wanted)), url), wanted)


def scan_file(task: ScanTask) -> ScanResult:
    """Check one file and return its times (never its data), digests of ``digest_seconds``."""
    url = task.stored.url
    try:
        with opened(task.stored, task.source, task.source_options) as (location, lazy):
            checksum = checksum_of(location) if os.path.isfile(location) else None
            _check_layout(lazy, task.target, url)
            seconds = to_seconds(lazy["time"].values)
            unchanged = _unchanged_times(lazy, seconds, task.target, url)
            digests = _digests(lazy, seconds, task.digest_seconds, url)
            layout = layout_of(lazy)
        return ScanResult(
            stored=task.stored,
            checksum=checksum,
            layout=layout,
            seconds=seconds,
            digests=digests,
            unchanged_seconds=unchanged,
        )
    except Exception as exc:  # reported per file in the run summary; the run goes on
        log.info("scan of %s failed: %s", url, exc)
        return ScanResult(stored=task.stored, error=describe(exc))
