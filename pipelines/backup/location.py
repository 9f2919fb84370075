"""Where backups live: ``<URL>/<name>/...`` on a local path or ``s3://bucket/prefix``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.backup.errors import BackupRefusedError
from pipelines.backup.manifest import MANIFEST_NAME, NAME_PATTERN, Manifest, load_manifest
from pipelines.errors import ConfigError, SinkError, SourceError
from pipelines.storage import explain_storage_error, filesystem_root, is_remote

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listing:
    """The backup folders found: complete ones (with a manifest) and incomplete ones."""

    complete: list[str]
    incomplete: list[str]


class BackupLocation:
    """The folder that holds backups, one sub-folder per backup.

    Parameters
    ----------
    url
        A local path, ``file://`` URL or ``s3://bucket/prefix``.
    options
        fsspec options for it (see :func:`pipelines.storage.fsspec_options`).
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        if not url.strip():
            raise ConfigError(
                "the backup URL is empty; pass --to/--from PATH or s3://bucket/prefix"
            )
        self.url = url.rstrip("/")
        self.remote = is_remote(self.url)
        self.fs, self.root = filesystem_root(
            self.url, options, "backup location", "use a local path or s3://bucket/prefix"
        )

    def path(self, *parts: str) -> str:
        """The fsspec path of ``root/part/...``."""
        return "/".join([self.root, *parts])

    def describe(self, *parts: str) -> str:
        """The URL a user sees for ``root/part/...``."""
        return "/".join([self.url, *parts])

    def listing(self) -> Listing:
        """Every backup folder, oldest first; SourceError when the location cannot be read."""
        try:
            self.fs.invalidate_cache()
            if not self.fs.exists(self.root):
                return Listing([], [])
            entries = self.fs.ls(self.root, detail=True)
            names = sorted(
                Path(str(e["name"])).name
                for e in entries
                if e.get("type") == "directory" and NAME_PATTERN.match(Path(str(e["name"])).name)
            )
            complete = [n for n in names if self.fs.exists(self.path(n, MANIFEST_NAME))]
        except Exception as exc:  # translated at the storage edge, cause kept
            raise SourceError(self.url, explain_storage_error(self.url, exc)) from exc
        return Listing(complete, [n for n in names if n not in complete])

    def read_manifest(self, name: str) -> Manifest:
        """The checked manifest of backup ``name``.

        Raises
        ------
        BackupRefusedError
            The backup has no manifest (it is incomplete) or the manifest is damaged.
        """
        where = self.describe(name, MANIFEST_NAME)
        try:
            raw = bytes(self.fs.cat_file(self.path(name, MANIFEST_NAME)))
        except FileNotFoundError as exc:
            raise BackupRefusedError(
                f"backup {self.describe(name)} has no {MANIFEST_NAME}: it is incomplete (it was "
                "interrupted, or is still being written); restore another backup"
            ) from exc
        except Exception as exc:
            raise SourceError(where, explain_storage_error(where, exc)) from exc
        manifest = load_manifest(raw, where)
        if manifest.name != name:
            raise BackupRefusedError(
                f"{where} describes backup {manifest.name}, not {name}: the folder was renamed "
                "or its manifest copied from another backup; restore another backup"
            )
        return manifest

    def upload(self, local: Path, name: str, relative: str) -> None:
        """Copy a local file to ``<name>/<relative>``; SinkError naming the fix."""
        target = self.path(name, relative)
        try:
            if not self.remote:
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(local), target)
        except Exception as exc:
            raise SinkError(
                f"backup location {self.describe(name, relative)}: cannot write "
                f"({explain_storage_error(self.url, exc)}); check the URL, the bucket and write "
                "access"
            ) from exc

    def write_bytes(self, name: str, relative: str, data: bytes) -> None:
        """Write ``data`` to ``<name>/<relative>`` in one put."""
        target = self.path(name, relative)
        try:
            if not self.remote:
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(target, data)
        except Exception as exc:
            raise SinkError(
                f"backup location {self.describe(name, relative)}: cannot write "
                f"({explain_storage_error(self.url, exc)}); check write access"
            ) from exc

    def fetch(self, name: str, relative: str, local: Path) -> None:
        """Copy ``<name>/<relative>`` to a local file; FileNotFoundError when it is missing."""
        source = self.path(name, relative)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(source, str(local))
        except FileNotFoundError:
            raise
        except Exception as exc:
            where = self.describe(name, relative)
            if "nosuchkey" in str(exc).lower():
                raise FileNotFoundError(where) from exc
            raise SourceError(where, explain_storage_error(where, exc)) from exc

    def delete(self, name: str) -> None:
        """Remove a backup folder and everything in it."""
        try:
            self.fs.rm(self.path(name), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise SinkError(
                f"backup location {self.describe(name)}: cannot delete it "
                f"({explain_storage_error(self.url, exc)}); delete it by hand"
            ) from exc
        finally:
            self.fs.invalidate_cache()

    def discard(self, name: str) -> None:
        """Remove a failed backup's folder; a leftover is logged, never raised."""
        try:
            self.delete(name)
        except SinkError:
            logger.exception("could not remove the incomplete backup %s", self.describe(name))
