"""Streaming mode: follow a prefix and run one forecast cycle per new initial time, once.

Each poll lists the prefix, groups the files whose names match the source pattern by the
initial time they name, and tracks when each file's fingerprint (S3 ETag, or size and mtime)
last changed. An initial time is complete when none of its files changed for
``settle_seconds`` (or at once, with ``expected_files`` or a ``marker``). Complete initial times
run :func:`pipelines.cycle.run_cycle` oldest first; a newer one waits while an older one is
still settling, because the analysis store only grows at its end.

The position is in the run ledger: run ``watch-<time>`` (kind ``watch``) holds the files and
fingerprints it processed. An initial time whose run succeeded with the same fingerprints is
never run again; one whose run was cut off (``running``: the watcher was killed) is finished
or redone at the next start. A failure caused by the files (unreadable, wrong grid or units)
is retried only when a fingerprint changes; other failures (database, object store, forecast)
are retried after a back-off and at the next start.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipelines.cycle import run_cycle
from pipelines.errors import ClimateError, ConfigError, SinkError, SourceError, describe
from pipelines.executors import Executor
from pipelines.ledger import RunLedger, RunRecord
from pipelines.storage import explain_storage_error, filesystem, fsspec_options, is_remote
from schemas.config import IngestConfig, load_config
from schemas.forecast_config import ForecastConfig
from schemas.settings import Settings
from schemas.watch_config import WatchConfig

log = logging.getLogger(__name__)
ON_CHANGE = "when the files change"  # a failure caused by the files themselves
LATER = "after a back-off"  # any other failure: the database, the object store, the forecast
RETRY_FIRST_S, RETRY_MAX_S = 30.0, 900.0


@dataclass(frozen=True)
class WatchSetup:
    """A watch config with the ingest and forecast configs it names, loaded and checked."""

    config: WatchConfig
    ingest: IngestConfig
    forecast: ForecastConfig


def load_setup(config: WatchConfig) -> WatchSetup:
    """Read the ingest and forecast configs that ``config`` names.

    The ingest config's source becomes the watched prefix (kind and variables of
    ``config.source``), and the storage keys set (not null) in ``config.storage`` replace its own.

    Raises
    ------
    ConfigError
        A referenced config is missing or invalid (the message names the key and value).
    """
    source = config.source
    storage = config.storage.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    overrides = [
        f"source.kind={source.kind}",
        f"source.urls={json.dumps([source.url])}",
        f"source.variables={json.dumps(source.variables)}",
        *(f"storage.{key}={json.dumps(value)}" for key, value in storage.items()),
    ]
    try:
        ingest = load_config(IngestConfig, config.ingest, overrides)
        forecast = load_config(ForecastConfig, config.forecast)
    except ValueError as exc:
        raise ConfigError(f"{exc}\n(named by the watch config's ingest or forecast key)") from exc
    if forecast.analysis != ingest.store.url:
        log.warning(
            "the forecast config's analysis %s is not the ingest store %s: the watcher forecasts "
            "from %s; make them the same to silence this",
            forecast.analysis,
            ingest.store.url,
            ingest.store.url,
        )
    return WatchSetup(config, ingest, forecast)


@dataclass(frozen=True)
class SourceFile:
    """One object under the watched prefix."""

    url: str
    name: str
    fingerprint: str


def list_prefix(url: str, options: dict[str, Any]) -> list[SourceFile]:
    """Every file under a directory or ``s3://`` prefix, sorted by URL (none: empty list).

    Raises
    ------
    SourceError
        The prefix cannot be listed (unreachable endpoint, credentials), with the fix.
    """
    try:
        fs, path = filesystem(url, options)
        fs.invalidate_cache()  # s3fs caches listings: a watcher must see new objects
        found = fs.find(path, detail=True)
    except Exception as exc:  # translated at the storage edge, cause kept
        raise SourceError(url, explain_storage_error(url, exc)) from exc
    files = []
    for key, info in sorted(found.items()):
        if info.get("type") == "directory":
            continue
        etag = info.get("ETag") or info.get("etag")
        mtime = info.get("mtime") or info.get("LastModified") or ""
        fingerprint = (
            f"etag:{str(etag).strip(chr(34))}" if etag else f"size:{info.get('size')}-mtime:{mtime}"
        )
        files.append(
            SourceFile(
                fs.unstrip_protocol(key) if is_remote(url) else key,
                key.rsplit("/")[-1],
                fingerprint,
            )
        )
    return files


@dataclass
class InitGroup:
    """The files of one initial time."""

    init_time: datetime
    files: dict[str, str] = field(default_factory=dict)  # url -> fingerprint
    texts: set[str] = field(default_factory=set)  # how the file names write the time

    @property
    def key(self) -> str:
        """The cycle's key and its watch run id: ``watch-2019033112``."""
        minutes = f"{self.init_time:%M}" if self.init_time.minute else ""
        return f"watch-{self.init_time:%Y%m%d%H}{minutes}"


@dataclass
class _Done:
    """An initial time processed with these fingerprints; retried from ``retry_at`` if set."""

    files: dict[str, str]
    retry_at: float | None = None
    attempts: int = 0


class Watcher:
    """Follows the prefix of a :class:`WatchSetup`; see the module docstring.

    Parameters
    ----------
    setup
        From :func:`load_setup`.
    settings, engine, executor
        As :func:`pipelines.cycle.run_cycle` takes them; ``engine`` holds the run ledger.
    clock
        Seconds of a monotonic clock (tests may pass their own).
    """

    def __init__(
        self,
        setup: WatchSetup,
        settings: Settings,
        engine: Engine,
        executor: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.setup, self.settings, self.engine, self.executor = setup, settings, engine, executor
        self.clock = clock
        self.runs = RunLedger(engine)
        source = setup.config.source
        self.pattern = re.compile(source.pattern)
        self.pending = 0  # initial times seen and not yet complete, after the last poll
        self._changed: dict[str, tuple[str, float]] = {}  # url -> (fingerprint, last change)
        self._done: dict[datetime, _Done] = {}
        self._recalled: set[datetime] = set()
        self._warned: set[str] = set()
        self._trouble: str | None = None  # the error of the last poll, while it lasts
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop after the current cycle (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, max_cycles: int | None = None, until_idle: float | None = None) -> int:
        """Poll until stopped; return the number of cycles run.

        Parameters
        ----------
        max_cycles
            Return after this many cycles (tests, benches).
        until_idle
            Return once nothing ran and nothing was settling for this many seconds.
        """
        cycles, idle_since = 0, self.clock()
        while not self._stop.is_set():
            try:
                ran = self.poll(None if max_cycles is None else max_cycles - cycles)
                if self._trouble:
                    log.warning("watch: working again after: %s", self._trouble)
                    self._trouble = None
            except (SourceError, SinkError, SQLAlchemyError) as exc:  # listing, run ledger
                if describe(exc) != self._trouble:  # once per outage, not once per poll
                    log.warning("watch: %s; retrying every %g s", exc, self._poll_seconds)
                self._trouble, ran = describe(exc), 0
            cycles += ran
            if max_cycles is not None and cycles >= max_cycles:
                break
            if ran or self.pending:
                idle_since = self.clock()
            elif until_idle is not None and self.clock() - idle_since >= until_idle:
                break
            self._stop.wait(self._poll_seconds)
        return cycles

    @property
    def _poll_seconds(self) -> float:
        return self.setup.config.poll_seconds

    def poll(self, limit: int | None = None) -> int:
        """List the prefix once and run the cycles that are due (at most ``limit``)."""
        ran = 0
        for group in self.due():
            if self._stop.is_set() or (limit is not None and ran >= limit):
                break
            self.process(group)
            ran += 1
        return ran

    def due(self) -> list[InitGroup]:
        """The complete initial times not yet processed, oldest first.

        Stops at the first initial time that is still settling: newer ones wait for it.
        """
        files = list_prefix(self.setup.config.source.url, self._options())
        now = self.clock()
        groups = self._groups(files)
        self._observe([(url, fp) for g in groups.values() for url, fp in g.files.items()], now)
        names = {f.name for f in files}
        waiting = [groups[init] for init in sorted(groups) if not self._is_done(groups[init], now)]
        due = []
        for group in waiting:
            if not self._complete(group, names, now):
                break
            due.append(group)
        self.pending = len(waiting) - len(due)
        return due

    def _options(self) -> dict[str, Any]:
        # fresh each time: botocore rewrites the dicts it is given, so a reused one would name
        # another cached filesystem than the ingest's
        return fsspec_options(
            self.setup.config.source.url, self.setup.config.storage, self.settings
        )

    def _groups(self, files: Iterable[SourceFile]) -> dict[datetime, InitGroup]:
        source = self.setup.config.source
        groups: dict[datetime, InitGroup] = {}
        for found in files:
            match = self.pattern.fullmatch(found.name)
            if match is None:
                continue
            text = match.group("time")
            try:
                init = source.initial_time(text)
            except ValueError as exc:
                self._warn_once(
                    found.url,
                    f"watch: {found.url}: its time {text!r} does not parse with "
                    f"{source.time_format!r} ({exc}); rename the file or fix time_format",
                )
                continue
            group = groups.setdefault(init, InitGroup(init))
            group.files[found.url] = found.fingerprint
            group.texts.add(text)
        return groups

    def _observe(self, files: list[tuple[str, str]], now: float) -> None:
        """Track when each file last changed; forget files that are gone."""
        previous, self._changed = self._changed, {}
        for url, fingerprint in files:
            seen = previous.get(url)
            self._changed[url] = seen if seen and seen[0] == fingerprint else (fingerprint, now)

    def _complete(self, group: InitGroup, names: set[str], now: float) -> bool:
        config = self.setup.config
        if config.expected_files is not None and len(group.files) >= config.expected_files:
            return True
        if config.marker and any(config.marker.format(time=t) in names for t in group.texts):
            return True
        last_change = max(self._changed[url][1] for url in group.files)
        return now - last_change >= config.settle_seconds

    def _is_done(self, group: InitGroup, now: float) -> bool:
        if group.init_time not in self._recalled:
            self._recalled.add(group.init_time)
            self._recall(group)
        done = self._done.get(group.init_time)
        if done is None or done.files != group.files:
            return False
        return done.retry_at is None or now < done.retry_at

    def _recall(self, group: InitGroup) -> None:
        """What the run ledger says about this initial time (once per watcher)."""
        record = self.runs.get(group.key)
        if record is None:
            return
        summary = record.summary or {}
        if record.status == "succeeded" or summary.get("retry") == ON_CHANGE:
            self._done[group.init_time] = _Done(summary.get("files") or {})
        elif record.status == "running" and self._committed_before_cut(record, group):
            log.info("watch: run %s was cut off after its forecast committed", group.key)
            self._done[group.init_time] = _Done(group.files)
        elif record.status == "running":
            log.info("watch: run %s was cut off (the watcher stopped): redone", group.key)

    def _committed_before_cut(self, record: RunRecord, group: InitGroup) -> bool:
        """Whether a cut-off run's forecast committed; if so it is recorded as succeeded."""
        forecast = self.runs.get(f"{group.key}-forecast")
        if (
            record.config.get("files") != group.files
            or forecast is None
            or forecast.status != "succeeded"
            or forecast.started_at < record.started_at
        ):
            return False
        rows = (forecast.summary or {}).get("rows", 0)
        summary = {**record.config, "forecast_run": forecast.run_id, "rows": rows}
        self.runs.finish(group.key, "succeeded", {**summary, "recovered": True})
        return True

    def process(self, group: InitGroup) -> str:
        """Run the cycle of one initial time and record it; returns the watch run's status."""
        setup, key = self.setup, group.key
        record: dict[str, Any] = {"init_time": group.init_time.isoformat(), "files": group.files}
        config = {**record, "ingest": setup.config.ingest, "forecast": setup.config.forecast}
        self.runs.start("watch", config, key)
        started = time.perf_counter()
        try:
            result = run_cycle(
                key,
                sorted(group.files),
                setup.ingest,
                setup.forecast,
                self.settings,
                self.engine,
                self.executor,
            )
        except SourceError as exc:
            return self._failed(group, record, exc, ON_CHANGE)
        except (ClimateError, OSError, SQLAlchemyError) as exc:
            return self._failed(group, record, exc, LATER)
        except BaseException as exc:  # stopped (second signal) or a bug: redone at next start
            summary = {**record, "retry": "at the next start"}
            self.runs.finish(key, "failed", summary, error=f"abandoned: {describe(exc)}")
            raise
        seconds = round(time.perf_counter() - started, 3)
        self.runs.finish(key, "succeeded", {**result.summary(), **record, "seconds": seconds})
        self._done[group.init_time] = _Done(dict(group.files))
        log.info(
            "watch: initial time %s: %d file(s) ingested, forecast run %s committed %d row(s) "
            "in %.1f s",
            group.init_time.isoformat(),
            len(group.files),
            result.forecast.run_id if result.forecast else None,
            result.forecast.rows if result.forecast else 0,
            seconds,
        )
        return "succeeded"

    def _failed(
        self, group: InitGroup, record: dict[str, Any], exc: BaseException, retry: str
    ) -> str:
        previous = self._done.get(group.init_time)
        attempts = previous.attempts + 1 if previous and previous.files == group.files else 1
        retry_at = None
        when = "when one of its files changes: fix or replace the file"
        if retry == LATER:
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempts - 1))
            retry_at = self.clock() + delay
            when = f"in {delay:.0f} s and at the next start"
        error = describe(exc)
        self.runs.finish(group.key, "failed", {**record, "retry": retry}, error=error)
        self._done[group.init_time] = _Done(dict(group.files), retry_at, attempts)
        log.warning(
            "watch: initial time %s failed (run %s recorded failed): %s; retried %s",
            group.init_time.isoformat(),
            group.key,
            error,
            when,
        )
        return "failed"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
