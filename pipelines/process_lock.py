"""One process at a time: an exclusive ``fcntl.flock`` on a lock file, held for a process's life,
whose holder's PID a refused second process names."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from pipelines.errors import ClimateError, ConfigError

logger = logging.getLogger(__name__)


class SchedulerBusyError(ClimateError, OSError):
    """Another scheduler holds the lock."""


def lock_path_for(engine: Engine, lock_dir: str | Path | None, kind: str = "nightly") -> Path:
    """Where a scheduler of ``kind`` keeps its lock file.

    Parameters
    ----------
    engine
        The ledger's engine: a SQLite database file's directory holds the lock by default.
    lock_dir
        A directory that overrides the default (needed on PostgreSQL, where ``output/``
        under the working directory is used otherwise).
    kind
        The run kind the scheduler records; one lock per kind.
    """
    name = f"schedule-{kind}.lock"
    if lock_dir is not None:
        return Path(lock_dir) / name
    database = engine.url.database
    in_memory = not database or database == ":memory:" or database.startswith("file:")
    if engine.url.get_backend_name() == "sqlite" and database and not in_memory:
        return Path(database).parent / name
    return Path("output") / name


@contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) with this process's PID in it.

    Raises
    ------
    SchedulerBusyError
        Another process holds it; the message names its PID.
    ConfigError
        The lock file cannot be created.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the scheduler lock file {path}: {exc.strerror}; "
            "set schedule.lock_dir to a writable directory"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise SchedulerBusyError(
                f"another scheduler (pid {holder}) holds the lock {path}; only one may run "
                f"at a time: stop it first (kill -TERM {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
