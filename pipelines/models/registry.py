"""The model registry: ONNX files and cards in object storage, one database row per version.

Artefacts live at ``{root}/{name}/{version}/model.onnx`` and ``model.card.json`` (a local path
or ``s3://bucket/prefix``, see :mod:`pipelines.models.artefact_store`); rows live in the ``models``
table. A version is registered only
after its file matches its card (sha256) and ONNX Runtime has loaded it and checked the graph
against the card. Files are uploaded under ``{root}/.incoming/`` first and moved to their
final keys inside the transaction that inserts the row, so a failure leaves neither a row nor
a half-registered version. At most one version of a name is ``promoted``; ``promote`` swaps
it in one transaction, and only after the skill gate passed: the registry reads the skill
table through its own engine and applies :func:`pipelines.skill_gate.promotion_verdict` itself,
so no caller can promote an unevaluated or unskilful model. Retired versions keep their files:
past forecasts stay traceable and :meth:`ModelRegistry.fetch` can still download them by
version.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Row, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipelines.db import transaction
from pipelines.errors import ClimateError, ModelError, SinkError
from pipelines.models.artefact_store import CARD_NAME, ONNX_NAME, ArtefactStore
from pipelines.models.artefacts import file_sha256, load_card, verify_sha256
from pipelines.models.runtime import ModelRuntime
from pipelines.skill_gate import DEFAULT_MARGINS, promotion_verdict
from pipelines.skill_table import SkillTable
from pipelines.storage import cache_dir, fsspec_options
from schemas.config import StorageOptions
from schemas.model_card import ModelCard, card_path_for
from schemas.registry_tables import RegisteredModel
from schemas.settings import Settings
from schemas.tables import utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_MODELS: Table = RegisteredModel.__table__  # type: ignore[assignment]
# Card fields that may differ between two registrations of the same file.
_VOLATILE_CARD_FIELDS = {"created_at", "scores"}


@dataclass(frozen=True)
class ModelRecord:
    """One row of ``models``: a registered model version."""

    id: int
    name: str
    version: str
    sha256: str
    status: str  # candidate | promoted | retired
    artefact_url: str  # the ONNX file; the card is beside it
    card: ModelCard
    registered_at: datetime
    promoted_at: datetime | None  # when last promoted
    retired_at: datetime | None

    @property
    def card_url(self) -> str:
        """Where the card is stored, beside the ONNX file."""
        return self.artefact_url.rsplit("/", 1)[0] + "/" + CARD_NAME


def _record(row: Row[Any]) -> ModelRecord:
    m = row._mapping
    return ModelRecord(
        id=m["id"],
        name=m["name"],
        version=m["version"],
        sha256=m["sha256"],
        status=m["status"],
        artefact_url=m["artefact_url"],
        card=ModelCard.model_validate(m["card"]),
        registered_at=m["registered_at"],
        promoted_at=m["promoted_at"],
        retired_at=m["retired_at"],
    )


def _check_key(kind: str, value: str) -> None:
    if not _KEY.match(value):
        raise ModelError(
            f"model {kind} {value!r} cannot be a registry key: use 1..128 letters, digits, "
            "'.', '_', '+' or '-', starting with a letter or digit; fix the card"
        )


def _card_differences(stored: ModelCard, new: ModelCard) -> list[str]:
    old_fields = stored.model_dump(mode="json")
    new_fields = new.model_dump(mode="json")
    return sorted(
        key
        for key in old_fields.keys() | new_fields.keys()
        if key not in _VOLATILE_CARD_FIELDS and old_fields.get(key) != new_fields.get(key)
    )


class ModelRegistry:
    """Register, list, promote, retire and fetch model versions.

    Parameters
    ----------
    engine
        A migrated engine (see :func:`pipelines.db.make_engine` and ``migrate``).
    root_url
        Where artefacts live: a local path, ``file://`` URL or ``s3://bucket/prefix``.
    storage_options
        fsspec options for ``root_url`` (see :func:`pipelines.storage.fsspec_options`).
    cache
        Where :meth:`fetch` keeps downloaded models; ``$CLIMATE_CACHE_DIR/models`` (or the
        temporary directory's ``climate-cache/models``) when None.
    """

    def __init__(
        self,
        engine: Engine,
        root_url: str,
        storage_options: dict[str, Any] | None = None,
        cache: str | Path | None = None,
    ) -> None:
        self.engine = engine
        self.store = ArtefactStore(root_url, storage_options)
        self.cache = Path(cache) if cache is not None else cache_dir() / "models"

    @classmethod
    def from_settings(
        cls,
        engine: Engine,
        settings: Settings,
        storage: StorageOptions | None = None,
        cache: str | Path | None = None,
    ) -> ModelRegistry:
        """The registry at ``settings.model_registry_url`` with its credentials and endpoint."""
        url = settings.model_registry_url
        options = fsspec_options(url, storage or StorageOptions(), settings)
        return cls(engine, url, options, cache)

    # -- rows --------------------------------------------------------------------------------

    def _find(self, name: str, version: str) -> ModelRecord | None:
        stmt = select(_MODELS).where(_MODELS.c.name == name, _MODELS.c.version == version)
        with transaction(self.engine, write=False) as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _record(row)

    def list(self, name: str | None = None) -> builtins.list[ModelRecord]:
        """Every registered version (of ``name``), by name and registration time."""
        stmt = select(_MODELS).order_by(_MODELS.c.name, _MODELS.c.registered_at, _MODELS.c.id)
        if name is not None:
            stmt = stmt.where(_MODELS.c.name == name)
        with transaction(self.engine, write=False) as conn:
            return [_record(row) for row in conn.execute(stmt)]

    def get(self, name: str, version: str) -> ModelRecord:
        """One version; ModelError naming the registered versions when it is unknown."""
        found = self._find(name, version)
        if found is not None:
            return found
        versions = [r.version for r in self.list(name)]
        known = f"registered versions: {', '.join(versions)}" if versions else "no versions"
        raise ModelError(
            f"model {name} has no version {version!r} in the registry ({known}); "
            "register it with `climate models register PATH.onnx`"
        )

    def promoted(self, name: str) -> ModelRecord | None:
        """The promoted version of ``name``, if any."""
        stmt = select(_MODELS).where(_MODELS.c.name == name, _MODELS.c.status == "promoted")
        with transaction(self.engine, write=False) as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _record(row)

    # -- register ----------------------------------------------------------------------------

    def _same_version(self, existing: ModelRecord, card: ModelCard) -> ModelRecord:
        if existing.sha256 != card.sha256:
            raise ModelError(
                f"version {existing.version} of {existing.name} already exists with sha256 "
                f"{existing.sha256}, this file has {card.sha256}; register a new version "
                "(give the card another version)"
            )
        differences = _card_differences(existing.card, card)
        if differences:
            raise ModelError(
                f"version {existing.version} of {existing.name} is registered with the same "
                f"file but a different card ({', '.join(differences)} differ); register a new "
                "version (give the card another version)"
            )
        logger.info("model %s %s is registered already", existing.name, existing.version)
        return existing

    def register(
        self, onnx_path: str | Path, card: str | Path | ModelCard | None = None
    ) -> ModelRecord:
        """Verify a model and register it as a ``candidate``.

        Parameters
        ----------
        onnx_path
            The ONNX file.
        card
            Its card (a :class:`ModelCard` or a path); ``model.card.json`` beside
            ``model.onnx`` when None. The card names the model and its version.

        Returns
        -------
        ModelRecord
            The new row; the existing one when this file is registered under this version
            already (a no-op).

        Raises
        ------
        ModelError
            The file does not match the card (sha256), cannot be loaded by ONNX Runtime, its
            graph does not match the card, or the version exists with another file or card.
        SinkError
            The object store or the database refused the write; nothing is registered.
        """
        onnx_path = Path(onnx_path)
        if not isinstance(card, ModelCard):
            card = load_card(card if card is not None else card_path_for(onnx_path))
        _check_key("name", card.name)
        _check_key("version", card.version)
        verify_sha256(onnx_path, card)
        existing = self._find(card.name, card.version)
        if existing is not None:
            return self._same_version(existing, card)
        ModelRuntime.load(onnx_path, card, device="cpu", threads=1)  # ModelError if unusable
        incoming = self.store.upload(onnx_path, card)
        try:
            self._insert(card, incoming)
        except SinkError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # registered meanwhile
                existing = self._find(card.name, card.version)
                if existing is not None:
                    return self._same_version(existing, card)
            raise
        finally:
            self.store.remove(incoming)
        record = self.get(card.name, card.version)
        logger.info("registered model %s %s at %s", card.name, card.version, record.artefact_url)
        return record

    def _insert(self, card: ModelCard, incoming: str) -> None:
        values = {
            "name": card.name,
            "version": card.version,
            "sha256": card.sha256,
            "status": "candidate",
            "artefact_url": self.store.onnx_url(card.name, card.version),
            "card": card.model_dump(mode="json"),
            "registered_at": utcnow(),
            "promoted_at": None,
            "retired_at": None,
        }
        # The row becomes visible only with the files at their final keys; a concurrent
        # registration of the same version waits on the unique key and never moves its files.
        with transaction(self.engine) as conn:
            conn.execute(insert(_MODELS).values(**values))
            self.store.publish(incoming, card.name, card.version)

    # -- promote and retire ------------------------------------------------------------------

    def promote(
        self, name: str, version: str, margins: Mapping[int, float] = DEFAULT_MARGINS
    ) -> ModelRecord:
        """Make this version the promoted one, if it passes the skill gate.

        The gate (:func:`pipelines.skill_gate.promotion_verdict`) always applies: it judges the
        scores of the newest evaluation run of this model file that succeeded in the run
        ledger and scored no training period of the card. The previous promoted version
        becomes a candidate.

        Parameters
        ----------
        name, version
            A registered, not retired, version.
        margins
            Lead time (hours) -> by how much the model's RMSE must beat the better baseline
            (see :func:`pipelines.skill_gate.gate_problems`). Added to the default bar: they
            can add lead times or raise a margin, never lower or drop a default one.

        Raises
        ------
        ModelError
            Unknown or retired version, or the gate refused it (not evaluated, evaluated only
            by runs that did not succeed or that scored training data, or not skilful enough);
            the message lists why, and nothing changed.
        """
        record = self.get(name, version)
        if record.status == "promoted":
            return record
        if record.status == "retired":
            raise ModelError(
                f"{name} {version} is retired and cannot be promoted; register it again under "
                "a new version if it should serve"
            )
        tightened = {
            lead: max(DEFAULT_MARGINS.get(lead, 0.0), margins.get(lead, 0.0))
            for lead in {*DEFAULT_MARGINS, *margins}
        }  # margins can only add leads or raise the bar, never lower or drop the default one
        verdict = promotion_verdict(SkillTable(self.engine), record.card, tightened)
        if verdict.problems:
            current = self.promoted(name)
            stays = (
                f"{name} {current.version} stays promoted"
                if current
                else f"no version of {name} is promoted; nothing changed"
            )
            raise ModelError(
                f"{name} {version} was not promoted ({stays}):\n"
                + "\n".join(f"  - {p}" for p in verdict.problems)
            )
        with transaction(self.engine) as conn:
            # Lock every version of the name so concurrent promotions run one after another.
            rows = conn.execute(
                select(_MODELS.c.version, _MODELS.c.status)
                .where(_MODELS.c.name == name)
                .with_for_update()
            )
            statuses: dict[str, str] = {row.version: row.status for row in rows}
            if statuses.get(version) == "retired":  # retired meanwhile
                raise ModelError(f"{name} {version} was retired while being promoted")
            conn.execute(
                update(_MODELS)
                .where(_MODELS.c.name == name, _MODELS.c.status == "promoted")
                .values(status="candidate")
            )
            conn.execute(
                update(_MODELS)
                .where(_MODELS.c.name == name, _MODELS.c.version == version)
                .values(status="promoted", promoted_at=utcnow())
            )
        logger.info("promoted model %s %s", name, version)
        return self.get(name, version)

    def retire(self, name: str, version: str, force: bool = False) -> ModelRecord:
        """Retire a version: it can no longer be promoted; its files are kept.

        The promoted version is retired only with ``force``; ``name`` then has no promoted
        version, and :meth:`fetch` without a version fails until another one is promoted.

        Raises
        ------
        ModelError
            Unknown version, or the promoted one without ``force``.
        """
        record = self.get(name, version)
        if record.status == "retired":
            return record
        if record.status == "promoted" and not force:
            raise ModelError(
                f"{name} {version} is the promoted version: promote another version first "
                f"(`climate models promote {name} VERSION`), or retire it with --force, which "
                f"leaves {name} without a promoted version (batch prediction and serving of "
                f"{name} without an explicit version then fail until one is promoted)"
            )
        with transaction(self.engine) as conn:
            conn.execute(
                update(_MODELS)
                .where(_MODELS.c.id == record.id)
                .values(status="retired", retired_at=utcnow())
            )
        if record.status == "promoted":
            logger.warning("retired the promoted model %s %s: none is promoted now", name, version)
        return self.get(name, version)

    # -- fetch -------------------------------------------------------------------------------

    def version_or_promoted(self, name: str, version: str | None = None) -> ModelRecord:
        """The row of a version (the promoted one when ``version`` is None); ModelError when
        there is no such (promoted) version."""
        if version is not None:
            return self.get(name, version)
        record = self.promoted(name)
        if record is None:
            raise ModelError(
                f"model {name} has no promoted version; promote one with "
                f"`climate models promote {name} VERSION`, or ask for a version"
            )
        return record

    def fetch(self, name: str, version: str | None = None) -> tuple[Path, ModelCard]:
        """A verified local copy of a version (the promoted one when ``version`` is None).

        The copy is cached by sha256; its card is written beside it (``model.card.json``).

        Returns
        -------
        tuple of Path and ModelCard
            The local ONNX file and its card, ready for ``ModelRuntime.load``.

        Raises
        ------
        ModelError
            No such (promoted) version, or the stored file or card does not match the row.
        SourceError
            The object store cannot be reached.
        """
        record = self.version_or_promoted(name, version)
        folder = self.cache / record.name / record.version / record.sha256[:16]
        target = folder / ONNX_NAME
        card = self._fetch_card(record)
        if not (target.exists() and file_sha256(target) == record.sha256):
            self._download(record, target)
        self._write_card(card, folder / CARD_NAME)
        return target, card

    def _write_card(self, card: ModelCard, path: Path) -> None:
        """Write the card atomically: concurrent fetches on one machine never see half a card."""
        partial = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        try:
            card.write(partial)
            partial.replace(path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ModelError(
                f"cannot write the model cache {path} ({exc}); set CLIMATE_CACHE_DIR to a "
                "writable directory"
            ) from exc

    def _corrupted(self, record: ModelRecord, detail: str) -> ModelError:
        return ModelError(
            f"artefact corrupted in the registry: {record.name} {record.version} "
            f"({record.artefact_url}): {detail}; restore the files from the original export "
            "or register the model again under a new version"
        )

    def _stored(self, record: ModelRecord, url: str, read: Callable[[], T]) -> T:
        try:
            return read()
        except FileNotFoundError as exc:
            raise self._corrupted(record, f"{url} is missing") from exc

    def _fetch_card(self, record: ModelRecord) -> ModelCard:
        raw = self._stored(
            record, record.card_url, lambda: self.store.read_card(record.name, record.version)
        )
        try:
            card = ModelCard.model_validate_json(raw)
        except ValueError as exc:
            raise self._corrupted(record, f"the stored card is not valid ({exc})") from exc
        if (card.name, card.version, card.sha256) != (record.name, record.version, record.sha256):
            raise self._corrupted(
                record,
                f"the stored card says {card.name} {card.version} sha256 {card.sha256}, the "
                f"registry row sha256 {record.sha256}",
            )
        return card

    def _download(self, record: ModelRecord, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        try:
            self._stored(
                record,
                record.artefact_url,
                lambda: self.store.download(record.name, record.version, partial),
            )
            found = file_sha256(partial)
            if found != record.sha256:
                raise self._corrupted(
                    record, f"its sha256 is {found}, the row and the card say {record.sha256}"
                )
            partial.replace(target)
        except ClimateError:
            partial.unlink(missing_ok=True)
            raise
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ModelError(
                f"cannot write the model cache {target} ({exc}); set CLIMATE_CACHE_DIR to a "
                "writable directory"
            ) from exc
        logger.info("fetched model %s %s to %s", record.name, record.version, target)
