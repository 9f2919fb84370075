"""Object storage access through fsspec: listing, fingerprints, local copies, clear errors."""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import xxhash

from pipelines.errors import ConfigError, SourceError
from schemas.config import StorageOptions
from schemas.settings import Settings

_GLOB_CHARACTERS = set("*?[")
_COPY_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    """One object found by an inventory."""

    url: str
    size: int
    fingerprint: str  # S3 ETag, or size and modification time of a local file


def is_remote(url: str) -> bool:
    """True for URLs with a scheme other than file://."""
    return "://" in url and not url.startswith("file://")


def fsspec_options(url: str, storage: StorageOptions, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for fsspec for this URL: endpoint, region, credentials, timeouts."""
    if not url.startswith("s3://"):
        return {}
    options: dict[str, Any] = {
        "anon": storage.anon,
        "config_kwargs": {
            "connect_timeout": storage.connect_timeout_s,
            "read_timeout": max(30.0, storage.connect_timeout_s),
            "retries": {"max_attempts": storage.max_attempts, "mode": "standard"},
        },
    }
    endpoint = storage.endpoint_url or settings.s3_endpoint_url
    if endpoint:
        options["endpoint_url"] = endpoint
    region = storage.region or settings.aws_region
    if region:
        options["client_kwargs"] = {"region_name": region}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        options["key"] = settings.aws_access_key_id.get_secret_value()
        options["secret"] = settings.aws_secret_access_key.get_secret_value()
    if settings.aws_session_token:
        options["token"] = settings.aws_session_token.get_secret_value()
    return options


def filesystem(url: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path


def filesystem_root(
    url: str, options: dict[str, Any] | None, named: str, fix: str
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of a store's root ``url`` and the root's path (no trailing slash).

    Raises
    ------
    ConfigError
        The URL cannot be opened: the message names the store (``named``) and says ``fix``.
    """
    try:
        fs, root = filesystem(url, dict(options or {}))
    except (ImportError, ValueError, TypeError) as exc:
        raise ConfigError(f"{named} {url!r}: cannot open it ({exc}); {fix}") from exc
    return fs, root.rstrip("/")


def _join(url: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path) if is_remote(url) else path


def explain_storage_error(url: str, exc: BaseException) -> str:
    """A message that says what went wrong reaching ``url`` and how to fix it."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if any(
        marker in lowered
        for marker in (
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "invalidclienttokenid",
            "access key id you provided does not exist",
            "security token",
        )
    ):
        return (
            f"the object store refused the credentials ({text}); "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a valid key pair"
        )
    if "accessdenied" in lowered or isinstance(exc, PermissionError):
        return f"access denied ({text}); grant read access to this key or use other credentials"
    if any(
        marker in lowered
        for marker in (
            "could not connect",
            "connect timeout",
            "endpointconnectionerror",
            "connection refused",
            "cannot connect",
            "name or service not known",
        )
    ):
        return (
            f"cannot reach the object store endpoint ({text}); check S3_ENDPOINT_URL or "
            "storage.endpoint_url and the network"
        )
    if "nosuchbucket" in lowered:
        return f"the bucket does not exist ({text}); check the bucket name in the URL"
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in lowered:
        return "no such file or object; check the path or key, or the glob pattern"
    return text


def _fingerprint(info: dict[str, Any]) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag:{str(etag).strip(chr(34))}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    return f"size:{info.get('size', 0)}-mtime:{mtime}"


def stat(url: str, options: dict[str, Any]) -> StoredFile:
    """Size and fingerprint of one file or object."""
    try:
        fs, path = filesystem(url, options)
        info = fs.info(path)
    except Exception as exc:  # translated at the storage edge, cause kept
        raise SourceError(url, explain_storage_error(url, exc)) from exc
    return StoredFile(url=url, size=int(info.get("size") or 0), fingerprint=_fingerprint(info))


def inventory(
    pattern: str, options: dict[str, Any], suffixes: tuple[str, ...], stores: bool = False
) -> list[StoredFile]:
    """Every file matching a path, glob, directory or prefix, sorted by URL.

    With ``stores`` the matches are Zarr stores (directories), not files inside them.
    """
    try:
        fs, path = filesystem(pattern, options)
        fs.invalidate_cache()  # s3fs caches listings: a long-running process must see new files
        if _GLOB_CHARACTERS & set(path):
            matches = sorted(fs.glob(path))
        elif stores or not fs.isdir(path):
            if not fs.exists(path):
                raise FileNotFoundError(path)
            matches = [path]
        else:
            matches = sorted(found for found in fs.find(path) if found.lower().endswith(suffixes))
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(pattern, explain_storage_error(pattern, exc)) from exc
    if not matches:
        raise SourceError(pattern, f"matched no files ending in {', '.join(suffixes)}")
    if stores:
        return [store_fingerprint(_join(pattern, fs, match), fs, match) for match in matches]
    found = []
    for match in matches:
        info = fs.info(match)
        if info.get("type") == "directory":
            continue
        found.append(
            StoredFile(_join(pattern, fs, match), int(info.get("size") or 0), _fingerprint(info))
        )
    return found


def store_fingerprint(url: str, fs: fsspec.AbstractFileSystem, path: str) -> StoredFile:
    """A Zarr store's identity: the hash of its (consolidated) metadata documents."""
    digest = hashlib.sha256()
    size = 0
    for name in (".zmetadata", "zarr.json", ".zgroup", ".zattrs"):
        candidate = f"{path.rstrip('/')}/{name}"
        if fs.exists(candidate):
            content = fs.cat_file(candidate)
            size += len(content)
            digest.update(name.encode() + content)
    if size == 0:
        raise SourceError(url, "is not a Zarr store (no .zmetadata, zarr.json or .zgroup)")
    return StoredFile(url=url, size=size, fingerprint=f"meta:{digest.hexdigest()[:32]}")


def checksum_of(path: str) -> str:
    """Checksum of a local file's bytes (XXH3-128 over a memory map: no copy of the bytes)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                digest.update(mapped)
    return f"xxh3:{digest.hexdigest()}"


def cache_dir() -> Path:
    """Where remote files are copied before decoding (per machine)."""
    root = Path(os.environ.get("CLIMATE_CACHE_DIR", Path(tempfile.gettempdir()) / "climate-cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def local_copy(stored: StoredFile, options: dict[str, Any]) -> Iterator[str]:
    """A local path holding the bytes of ``stored``; remote objects are copied and removed after."""
    if not is_remote(stored.url):
        yield stored.url.removeprefix("file://")
        return
    key = hashlib.sha256(f"{stored.url}|{stored.fingerprint}".encode()).hexdigest()[:24]
    suffix = Path(stored.url).suffix
    # one copy per use: tasks on one machine may read the same object at the same time
    target = cache_dir() / f"{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    partial = target.with_name(f"{target.name}.part")
    try:
        fs, path = filesystem(stored.url, options)
        with fs.open(path, "rb") as remote, open(partial, "wb") as local:
            shutil.copyfileobj(remote, local, _COPY_BLOCK)
        partial.replace(target)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise SourceError(stored.url, explain_storage_error(stored.url, exc)) from exc
    try:
        yield str(target)
    finally:
        target.unlink(missing_ok=True)
