"""Edge and offline copies: ``climate sync --to DIR`` writes, ``climate serve --offline DIR`` reads.

A synced directory holds everything the online application needs, as plain files::

    DIR -> .DIR.<synced at>-<hex>/    a symlink to the newest complete sync, swapped in one step
        model/model.onnx              the served model (sha256 checked against its card)
        model/model.card.json
        forecast/CURRENT.json         a forecast store of its own: the latest committed run
        forecast/runs/<run id>.<attempt>/
        keys.json                     hashes of the API keys that were not revoked (no secrets)
        sync.json                     written last: identities, sha256 of every file, time

:mod:`~pipelines.sync.manifest` reads and verifies a synced directory, :mod:`~pipelines.sync.pull`
writes one, :mod:`~pipelines.sync.keys` carries the API-key hashes.
"""

from pipelines.sync.manifest import (
    CARD_FILE,
    FORECAST_DIR,
    KEYS_FILE,
    MANIFEST,
    MODEL_FILE,
    IncompleteSyncError,
    NothingToSyncError,
    SyncManifest,
    verify_sync,
)
from pipelines.sync.pull import SyncResult, sync_to

__all__ = [
    "CARD_FILE",
    "FORECAST_DIR",
    "KEYS_FILE",
    "MANIFEST",
    "MODEL_FILE",
    "IncompleteSyncError",
    "NothingToSyncError",
    "SyncManifest",
    "SyncResult",
    "sync_to",
    "verify_sync",
]
