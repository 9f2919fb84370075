"""The registry's objects: list and copy them out for a backup, put them back on restore.

Everything under the registry root is copied except ``.incoming/`` (uploads not yet
published). On restore an object is written whole or not at all: a local file goes to a
temporary name beside its key and is renamed; on S3 one PUT is atomic. Every object is read
back and its sha256 checked after the write.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import SinkError, SourceError
from pipelines.models.artefact_store import INCOMING, ArtefactStore
from pipelines.models.artefacts import file_sha256
from pipelines.storage import explain_storage_error

logger = logging.getLogger(__name__)

REGISTRY_FOLDER = "registry"
_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class StagedObject:
    """One registry object copied to a local file."""

    key: str  # relative to the registry root
    path: Path
    sha256: str
    size: int


def registry_keys(store: ArtefactStore) -> list[str]:
    """Every object under the registry root (relative keys, sorted), ``.incoming/`` left out."""
    try:
        store.fs.invalidate_cache()
        if not store.fs.exists(store.root):
            return []
        found = store.fs.find(store.root)
    except Exception as exc:  # translated at the storage edge, cause kept
        url = store.root_url
        reason = explain_storage_error(url, exc)
        raise SourceError(url, f"cannot list the model registry: {reason}") from exc
    prefix = store.root + "/"
    keys = [str(path)[len(prefix) :] for path in found if str(path).startswith(prefix)]
    return sorted(k for k in keys if k and not (k == INCOMING or k.startswith(INCOMING + "/")))


def download_objects(store: ArtefactStore, keys: list[str], directory: Path) -> list[StagedObject]:
    """Copy ``keys`` from the registry to ``directory/<key>``, each with its sha256."""
    staged = []
    for key in keys:
        local = directory / key
        local.parent.mkdir(parents=True, exist_ok=True)
        source = store.path(key)
        try:
            store.fs.get_file(source, str(local))
        except Exception as exc:
            url = store.url(source)
            reason = explain_storage_error(url, exc)
            raise SourceError(url, f"cannot copy it for the backup: {reason}") from exc
        staged.append(StagedObject(key, local, file_sha256(local), local.stat().st_size))
    return staged


def stored_sha256(store: ArtefactStore, key: str) -> str | None:
    """sha256 of the object at ``key`` in the registry; None when there is none."""
    digest = hashlib.sha256()
    path = store.path(key)
    try:
        with store.fs.open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    except FileNotFoundError:
        return None
    except Exception as exc:
        url = store.url(path)
        reason = explain_storage_error(url, exc)
        raise SourceError(url, f"cannot read the registry: {reason}") from exc
    return digest.hexdigest()


def put_object(store: ArtefactStore, staged: StagedObject) -> None:
    """Write one object at its key, whole or not at all, then check its sha256 read back."""
    final = store.path(staged.key)
    try:
        if store.remote:
            store.fs.put_file(str(staged.path), final)  # one PUT: the object appears whole
        else:
            store.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            partial = f"{final}.restore-{uuid.uuid4().hex[:8]}.part"
            try:
                store.fs.put_file(str(staged.path), partial)
                store.fs.mv(partial, final)
            finally:
                if store.fs.exists(partial):
                    store.fs.rm(partial)
    except Exception as exc:
        raise SinkError(
            f"model registry {store.url(final)}: cannot write the restored object "
            f"({explain_storage_error(store.root_url, exc)}); check MODEL_REGISTRY_URL and write "
            "access, then restore again"
        ) from exc
    finally:
        store.fs.invalidate_cache()
    found = stored_sha256(store, staged.key)
    if found != staged.sha256:
        raise SinkError(
            f"model registry {store.url(final)}: the restored object reads back with sha256 "
            f"{found}, the backup's is {staged.sha256}; check the object store and restore again"
        )
