"""The forecast store: every run writes its own Zarr directory; a run becomes visible when an
atomic pointer names it.

Layout at the store's URL (a local path or ``s3://bucket/prefix``)::

    CURRENT.json                      the pointer: the committed run, and the runs kept
    runs/<run id>.<attempt>/          one plain Zarr v2 store per attempt (see zarr_sink)

A run writes into its own directory, which no reader looks at, and is committed by replacing
``CURRENT.json`` in one step (``os.replace`` on a local filesystem, one PUT of one object on
S3): readers see the previous run or the new one, never a mix, and a run that fails or is
killed before that step leaves the previous run exactly as it was. The last ``keep_runs``
committed runs stay readable by run id (time travel); older ones, and attempts that never
committed, are deleted when a later run commits.

:func:`open_forecast_store` is the one reader: evaluate, the server and users open forecasts
through it. One writer per store at a time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import xarray as xr
from fsspec.implementations.local import LocalFileSystem

from pipelines.errors import StoreError
from pipelines.storage import explain_storage_error, filesystem

log = logging.getLogger(__name__)

POINTER = "CURRENT.json"
RUNS = "runs"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class CommittedRun:
    """One committed run of a forecast store."""

    run_id: str
    path: str  # relative to the store's URL: runs/<run id>.<attempt>
    committed_at: str


def _join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def run_directory(run_id: str, attempt: str) -> str:
    """The relative path of one attempt of a run (run ids may hold any character)."""
    return f"{RUNS}/{_UNSAFE.sub('_', run_id)}.{attempt}"


class ForecastStore:
    """The pointer and the run directories at ``url``."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options or {}

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return filesystem(self.url, self.storage_options)

    def run_url(self, run_id: str, attempt: str) -> str:
        """Where one attempt of a run writes its Zarr store."""
        return _join(self.url, run_directory(run_id, attempt))

    # -- the pointer --------------------------------------------------------------------------

    def _read_pointer(self) -> dict[str, Any] | None:
        fs, root = self._fs()
        path = _join(root, POINTER)
        try:
            raw = fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:
            reason = explain_storage_error(self.url, exc)
            raise StoreError(f"{self.url}: cannot read the forecast store ({reason})") from exc
        try:
            pointer = json.loads(raw)
            pointer["runs"] = [CommittedRun(**run) for run in pointer["runs"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{self.url}/{POINTER} is not a forecast store pointer ({exc}); restore it from "
                "a backup, or remove the store and run the forecast again"
            ) from exc
        return pointer

    def committed(self) -> list[CommittedRun]:
        """The committed runs kept, newest first; [] before the first commit."""
        pointer = self._read_pointer()
        return list(pointer["runs"]) if pointer else []

    def current(self) -> CommittedRun | None:
        """The run readers see; None before the first commit."""
        runs = self.committed()
        return runs[0] if runs else None

    def _write_pointer(self, runs: list[CommittedRun]) -> None:
        body = json.dumps({"format": 1, "runs": [asdict(r) for r in runs]}, indent=1).encode()
        fs, root = self._fs()
        path = _join(root, POINTER)
        try:
            if isinstance(fs, LocalFileSystem):
                partial = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
                with open(partial, "wb") as handle:
                    handle.write(body)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, path)  # atomic on one filesystem
            else:
                fs.pipe_file(path, body)  # one PUT: an object store replaces it whole
        except Exception as exc:
            reason = explain_storage_error(self.url, exc)
            raise StoreError(f"{self.url}: cannot commit the forecast run ({reason})") from exc

    # -- commit and clean up ------------------------------------------------------------------

    def publish(self, run_id: str, attempt: str, keep_runs: int) -> CommittedRun:
        """Make one finished attempt the store's committed run, in one atomic step.

        Earlier runs of the same id drop out of the kept list (a re-run replaces them); runs
        beyond ``keep_runs`` and attempts that never committed are deleted afterwards.
        """
        run = CommittedRun(
            run_id=run_id,
            path=run_directory(run_id, attempt),
            committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        earlier = [r for r in self.committed() if r.run_id != run_id]
        kept = [run, *earlier][: max(1, keep_runs)]
        self._write_pointer(kept)
        self._prune({r.path for r in kept})
        return run

    def discard(self, run_id: str, attempt: str) -> None:
        """Delete an attempt that will not commit (best effort: a later commit prunes it)."""
        self._remove(run_directory(run_id, attempt))

    def _prune(self, keep: set[str]) -> None:
        fs, root = self._fs()
        try:
            found = fs.ls(_join(root, RUNS), detail=False)
        except FileNotFoundError:
            return
        for path in found:
            name = f"{RUNS}/{str(path).rstrip('/').rsplit('/', 1)[-1]}"
            if name not in keep:
                self._remove(name)

    def _remove(self, relative: str) -> None:
        fs, root = self._fs()
        try:
            fs.rm(_join(root, relative), recursive=True)
        except FileNotFoundError:
            return
        except Exception as exc:  # cleanup only: what is left is pruned by a later commit
            log.warning("could not delete %s/%s: %s", self.url, relative, exc)


def open_forecast_store(
    url: str, run_id: str | None = None, storage_options: dict[str, Any] | None = None
) -> xr.Dataset:
    """The committed forecast run at ``url`` as an :class:`xarray.Dataset` (lazy, dask).

    Parameters
    ----------
    url
        The forecast store (``output.zarr.url`` of the forecast config).
    run_id
        One of the kept committed runs (time travel); the latest when None.
    storage_options
        fsspec options for ``s3://`` URLs (endpoint, credentials).

    Raises
    ------
    StoreError
        No run is committed there (or not ``run_id``), or the store cannot be read.
    """
    store = ForecastStore(url, storage_options)
    runs = store.committed()
    if not runs:
        raise StoreError(
            f"{url}: no committed forecast run (no {POINTER}); run `climate predict` first, "
            "or check output.zarr.url"
        )
    chosen = runs[0] if run_id is None else next((r for r in runs if r.run_id == run_id), None)
    if chosen is None:
        kept = ", ".join(r.run_id for r in runs)
        raise StoreError(f"{url}: run {run_id!r} is not kept here (kept runs: {kept})")
    location = _join(url, chosen.path)
    try:
        return xr.open_zarr(
            location, consolidated=True, storage_options=storage_options or None, zarr_format=2
        )
    except Exception as exc:
        reason = explain_storage_error(location, exc)
        raise StoreError(f"{url}: cannot open run {chosen.run_id} ({reason})") from exc
