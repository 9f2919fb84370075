"""Where the model registry keeps its artefacts: ``{root}/{name}/{version}/model.onnx`` + card.

A local path, ``file://`` URL or ``s3://bucket/prefix``, through fsspec. Uploads go to
``{root}/.incoming/{uuid}/`` first and are moved to their final keys by :meth:`publish`, so a
failed upload never leaves a half-written version at a final key. Storage errors become
:class:`~pipelines.errors.SinkError` (writes) or :class:`~pipelines.errors.SourceError` (reads)
with the fix; a missing object is re-raised as ``FileNotFoundError`` for the caller to judge.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipelines.errors import SinkError, SourceError
from pipelines.storage import explain_storage_error, filesystem_root, is_remote
from schemas.model_card import CARD_SUFFIX, ModelCard

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
CARD_NAME = "model" + CARD_SUFFIX
INCOMING = ".incoming"
T = TypeVar("T")


class ArtefactStore:
    """The registry's object storage.

    Parameters
    ----------
    root_url
        A local path, ``file://`` URL or ``s3://bucket/prefix``.
    options
        fsspec options for it (see :func:`pipelines.storage.fsspec_options`).
    """

    def __init__(self, root_url: str, options: dict[str, Any] | None = None) -> None:
        self.root_url = root_url.rstrip("/")
        self.remote = is_remote(self.root_url)
        self.fs, self.root = filesystem_root(
            self.root_url,
            options,
            "model registry",
            "set MODEL_REGISTRY_URL to a local path or s3://bucket/prefix",
        )

    def path(self, *parts: str) -> str:
        """The fsspec path of ``root/part/...``."""
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        """The URL users see for a path: ``s3://...`` or the local path."""
        return str(self.fs.unstrip_protocol(path)) if self.remote else path

    def onnx_url(self, name: str, version: str) -> str:
        """Where a version's ONNX file lives once published."""
        return self.url(self.path(name, version, ONNX_NAME))

    def _write_failure(self, path: str, action: str, exc: BaseException) -> SinkError:
        url = self.url(path)
        if isinstance(exc, FileNotFoundError):
            reason = (
                f"the bucket or folder does not exist ({exc}); create it, or set "
                "MODEL_REGISTRY_URL to an existing one"
            )
        else:
            reason = explain_storage_error(url, exc)
        return SinkError(f"model registry {url}: cannot {action}: {reason}")

    def remove(self, path: str) -> None:
        """Delete ``path`` and everything under it; a leftover is logged, never raised."""
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        except Exception:  # cleanup after another outcome: keep that one
            logger.exception("model registry: could not remove %s", self.url(path))
        self.fs.invalidate_cache()

    def upload(self, onnx_path: Path, card: ModelCard) -> str:
        """Copy the file and its card to a fresh incoming folder; return that folder."""
        incoming = self.path(INCOMING, uuid.uuid4().hex)
        try:
            if not self.remote:
                self.fs.makedirs(incoming, exist_ok=True)
            self.fs.put_file(str(onnx_path), f"{incoming}/{ONNX_NAME}")
            self.fs.pipe_file(f"{incoming}/{CARD_NAME}", card.model_dump_json(indent=2).encode())
            stored = int(self.fs.size(f"{incoming}/{ONNX_NAME}"))
        except Exception as exc:
            self.remove(incoming)
            raise self._write_failure(incoming, "upload the model", exc) from exc
        if stored != onnx_path.stat().st_size:
            self.remove(incoming)
            raise SinkError(
                f"model registry {self.url(incoming)}: uploaded {stored} bytes of "
                f"{onnx_path.stat().st_size}; check the object store and register again"
            )
        return incoming

    def publish(self, incoming: str, name: str, version: str) -> None:
        """Move uploaded files to the version's final keys (overwriting an unclaimed leftover).

        On failure the final folder is removed: call this only while no committed row
        claims the version.
        """
        final = self.path(name, version)
        try:
            if not self.remote:
                self.fs.makedirs(final, exist_ok=True)
            for file in (CARD_NAME, ONNX_NAME):
                self.fs.mv(f"{incoming}/{file}", f"{final}/{file}")
        except Exception as exc:
            self.remove(final)
            raise self._write_failure(final, "move the model to its final key", exc) from exc
        finally:
            self.fs.invalidate_cache()

    def _read(self, path: str, action: str, op: Callable[[], T]) -> T:
        try:
            return op()
        except FileNotFoundError:
            raise
        except Exception as exc:
            url = self.url(path)
            raise SourceError(url, f"cannot {action}: {explain_storage_error(url, exc)}") from exc

    def read_card(self, name: str, version: str) -> bytes:
        """The stored card's bytes; FileNotFoundError when it is missing."""
        path = self.path(name, version, CARD_NAME)
        return self._read(path, "read the card", lambda: bytes(self.fs.cat_file(path)))

    def download(self, name: str, version: str, target: Path) -> None:
        """Copy the stored ONNX file to ``target``; FileNotFoundError when it is missing."""
        path = self.path(name, version, ONNX_NAME)
        self._read(path, "download the model", lambda: self.fs.get_file(path, str(target)))
