"""Keep the newest N complete backups; delete older ones and older incomplete leftovers."""

from __future__ import annotations

import logging

from pipelines.backup.location import BackupLocation
from pipelines.errors import ConfigError

logger = logging.getLogger(__name__)


def prune(location: BackupLocation, keep: int, newest: str) -> list[str]:
    """Delete all but the ``keep`` newest complete backups; return the names deleted.

    An incomplete folder (no manifest) is deleted only when it is older than the oldest
    backup kept: one that started later may still be being written. ``newest`` (the backup
    just made) is never deleted, whatever the clocks say.

    Raises
    ------
    ConfigError
        ``keep`` is below 1.
    """
    if keep < 1:
        raise ConfigError(f"--keep {keep}: keep at least 1 backup")
    listing = location.listing()
    kept = listing.complete[-keep:]
    if newest not in kept:
        kept.append(newest)
    doomed = [name for name in listing.complete if name not in kept]
    oldest_kept = min(kept)
    doomed += [name for name in listing.incomplete if name < oldest_kept]
    for name in sorted(doomed):
        location.delete(name)
        logger.info("deleted backup %s", location.describe(name))
    return sorted(doomed)
