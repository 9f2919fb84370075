"""The manifest of a backup: every file with its sha256 and size, every table with its rows.

The manifest carries its own checksum (sha256 of its canonical JSON without that field), so a
damaged manifest is refused like a damaged file. Backup names are UTC timestamps
(``20261206T031023.123456Z``): sorted by name is sorted by time.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.backup.errors import BackupRefusedError

MANIFEST_NAME = "manifest.json"
NAME_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z$")
_NAME_FORMAT = "%Y%m%dT%H%M%S.%fZ"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Frozen):
    """One file of the backup, relative to its folder."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TableEntry(_Frozen):
    """One table's dump: its file, row count, content digest and row order."""

    name: str
    file: str
    rows: int = Field(ge=0)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    primary_key: list[str]
    order_by: list[str]


class DatabaseEntry(_Frozen):
    """Where the tables came from."""

    kind: Literal["sqlite", "postgresql"]
    url: str  # password masked
    revision: str


class Manifest(_Frozen):
    """What a complete backup holds; written last."""

    format: Literal["climate-backup/1"] = "climate-backup/1"
    name: str = Field(pattern=NAME_PATTERN.pattern)
    started_at: datetime
    finished_at: datetime
    code_version: str
    database: DatabaseEntry
    tables: list[TableEntry]  # in load order (parents before children)
    registry_url: str
    registry_objects: list[str]  # keys relative to the registry root
    files: list[FileEntry]
    warnings: list[str] = Field(default_factory=list)
    checksum: str = ""

    def file(self, path: str) -> FileEntry:
        """The entry of ``path``; KeyError when the manifest does not list it."""
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    @property
    def total_bytes(self) -> int:
        """Bytes of every file listed."""
        return sum(entry.size for entry in self.files)


def backup_name(moment: datetime) -> str:
    """The folder name of a backup started at ``moment``."""
    return moment.astimezone(UTC).strftime(_NAME_FORMAT)


def _canonical(manifest: Manifest) -> bytes:
    data = manifest.model_dump(mode="json", exclude={"checksum"})
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def dump_manifest(manifest: Manifest) -> bytes:
    """The manifest as JSON with its checksum filled in."""
    checksum = hashlib.sha256(_canonical(manifest)).hexdigest()
    sealed = manifest.model_copy(update={"checksum": checksum})
    return sealed.model_dump_json(indent=2).encode()


def load_manifest(raw: bytes, where: str) -> Manifest:
    """Parse and check a manifest read from ``where``.

    Raises
    ------
    BackupRefusedError
        It is not a manifest of this format, or its checksum does not match its content.
    """
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BackupRefusedError(
            f"{where} is not a valid backup manifest ({first['loc']}: {first['msg']}); the "
            "backup is damaged: restore another one"
        ) from exc
    if hashlib.sha256(_canonical(manifest)).hexdigest() != manifest.checksum:
        raise BackupRefusedError(
            f"{where}: the manifest's checksum does not match its content (it was altered or "
            "damaged); restore another backup"
        )
    return manifest
