"""The manifest of a synced directory (``sync.json``) and the check that a directory is whole.

``sync.json`` is written last, so a directory without it is not a sync. It names the model
(name, version, sha256), the forecast run (id, directory, commit time), how many API keys were
shipped, and the size and sha256 of every file; :func:`verify_sync` checks all of them before
``climate serve --offline`` serves anything.
"""

from __future__ import annotations

import posixpath
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from pipelines.errors import ClimateError, ConfigError
from pipelines.forecast.store import POINTER, ForecastStore
from pipelines.models.artefacts import file_sha256, load_card
from schemas.config import StrictModel

MANIFEST = "sync.json"
MODEL_FILE = "model/model.onnx"
CARD_FILE = "model/model.card.json"
FORECAST_DIR = "forecast"
KEYS_FILE = "keys.json"
FORMAT: Literal[1] = 1
_RESYNC = "run `climate sync --to {dir}` (again)"


class IncompleteSyncError(ConfigError):
    """A directory is not a complete, intact sync (no manifest, a file missing or changed)."""


class NothingToSyncError(ClimateError, LookupError):
    """The source has nothing to copy yet (no committed forecast run)."""


class SyncedFile(StrictModel):
    """One file of a sync: its size and content hash."""

    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SyncedModel(StrictModel):
    """The model copied: its identity and where it came from."""

    name: str
    version: str
    sha256: str
    source: str = Field(description="the registry URL, or the model file's path")


class SyncedRun(StrictModel):
    """The committed forecast run copied, as the source store's pointer named it."""

    run_id: str
    path: str = Field(description="runs/<run id>.<attempt>, the same in the copy")
    committed_at: str
    source: str = Field(description="the forecast store's URL")


class SyncManifest(StrictModel):
    """``sync.json``: what a synced directory holds."""

    format: Literal[1] = FORMAT
    synced_at: datetime
    model: SyncedModel
    run: SyncedRun
    keys: int | None = Field(description="API keys shipped in keys.json; null: synced without")
    files: dict[str, SyncedFile]

    def write(self, path: Path) -> None:
        """Write as indented JSON (replacing ``path`` in one step)."""
        partial = path.with_name(path.name + ".part")
        partial.write_text(self.model_dump_json(indent=1) + "\n")
        partial.replace(path)


def _safe(relative: str) -> bool:
    """A relative POSIX path that stays inside the directory."""
    normal = posixpath.normpath(relative)
    return not (relative.startswith("/") or normal == ".." or normal.startswith("../"))


def read_manifest(directory: str | Path) -> SyncManifest:
    """The manifest of ``directory``, without checking its files.

    Raises
    ------
    IncompleteSyncError
        No such directory, no ``sync.json`` (a sync never finished there), or one that is
        not a manifest.
    """
    root = Path(directory)
    fix = _RESYNC.format(dir=root)
    if not root.is_dir():
        raise IncompleteSyncError(f"{root}: no such directory; {fix}")
    path = root / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IncompleteSyncError(
            f"{root} is not a complete sync: it has no {MANIFEST} (written last, so a sync "
            f"never finished there); {fix}"
        ) from None
    except OSError as exc:
        raise IncompleteSyncError(f"{path}: cannot read it ({exc.strerror}); {fix}") from exc
    try:
        manifest = SyncManifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise IncompleteSyncError(
            f"{path} is not a sync manifest ({where}: {first['msg']}); {fix}"
        ) from exc
    unsafe = sorted(name for name in manifest.files if not _safe(name))
    if unsafe:
        raise IncompleteSyncError(f"{path} names files outside the directory {unsafe}; {fix}")
    return manifest


def verify_sync(directory: str | Path) -> SyncManifest:
    """Check that ``directory`` is a complete, unchanged sync; its manifest.

    Every file the manifest lists must be there with its size and sha256; the model file
    must match its card and the manifest, and the forecast store's pointer must name the
    manifest's run.

    Raises
    ------
    IncompleteSyncError
        What is missing or changed, naming the file and the fix (sync again).
    """
    root = Path(directory)
    manifest = read_manifest(root)
    fix = _RESYNC.format(dir=root)
    required = {MODEL_FILE, CARD_FILE, f"{FORECAST_DIR}/{POINTER}"}
    if manifest.keys is not None:
        required.add(KEYS_FILE)
    missing_entries = sorted(required - manifest.files.keys())
    if missing_entries:
        raise IncompleteSyncError(f"{root}/{MANIFEST} does not list {missing_entries}; {fix}")
    for name, expected in sorted(manifest.files.items()):
        path = root / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IncompleteSyncError(
                f"{root} is not a complete sync: {name} is missing; {fix}"
            ) from None
        if size != expected.size or file_sha256(path) != expected.sha256:
            raise IncompleteSyncError(
                f"{root}: {name} changed since it was synced (sha256 or size differs from "
                f"{MANIFEST}); {fix}"
            )
    try:
        card = load_card(root / CARD_FILE)
    except ClimateError as exc:
        raise IncompleteSyncError(f"{exc}; {fix}") from exc
    identity = (manifest.model.name, manifest.model.version, manifest.model.sha256)
    if (card.name, card.version, card.sha256) != identity:
        raise IncompleteSyncError(
            f"{root}/{CARD_FILE} is {card.name} {card.version} sha256 {card.sha256}, the "
            f"manifest names {' '.join(identity)}; {fix}"
        )
    if manifest.files[MODEL_FILE].sha256 != card.sha256:
        raise IncompleteSyncError(f"{root}/{MODEL_FILE} does not match its card; {fix}")
    try:
        current = ForecastStore(str(root / FORECAST_DIR)).current()
    except ClimateError as exc:
        raise IncompleteSyncError(f"{exc}; {fix}") from exc
    if current is None or current.path != manifest.run.path:
        raise IncompleteSyncError(
            f"{root}/{FORECAST_DIR}/{POINTER} does not name the synced run "
            f"{manifest.run.path}; {fix}"
        )
    return manifest
