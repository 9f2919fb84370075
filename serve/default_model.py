"""Which model answers a request that names none, and how it follows the registry's promotions.

The default is the registry's promoted version of the configured name (or a pinned version, or
the configured file). :meth:`ModelFollower.refresh` re-reads it; before switching to a newly
promoted version it asks the predictor to load it (warm-up). A version that fails to load
(corrupt file, card mismatch: :class:`~pipelines.errors.ModelError`) is logged and counted and
the old default stays: a broken model is never served in place of a working one. A failed
version is tried again only after :data:`RETRY_PERIODS` refresh periods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException

from pipelines.errors import ClimateError, ModelError
from pipelines.models.artefacts import load_card
from pipelines.models.registry import ModelRegistry
from schemas.model_card import ModelCard, card_path_for
from schemas.model_source import ModelFile, RegistryModel
from serve.metrics import ServeMetrics
from serve.predictor import model_id

log = logging.getLogger(__name__)
RETRY_PERIODS = 10


@dataclass(frozen=True)
class DefaultModel:
    """The model answering requests that name none."""

    model_id: str  # name:version
    card: ModelCard


class ModelFollower:
    """The default model of one ingress replica.

    Parameters
    ----------
    source
        The configured model: a registry name (``promoted`` follows promotions) or a file.
    registry
        Builds the registry (in a worker thread, on first use); unused for a file.
    warm
        Asks the predictor to load a model id; raises when it cannot.
    metrics
        Where switches (ok, failed) are counted.
    refresh_seconds
        The refresh period (sets the retry delay of a failed version).
    """

    def __init__(
        self,
        source: ModelFile | RegistryModel,
        registry: Callable[[], ModelRegistry],
        warm: Callable[[str], Awaitable[object]],
        metrics: ServeMetrics,
        refresh_seconds: float,
    ) -> None:
        self.source = source
        self.registry = registry
        self.warm = warm
        self.metrics = metrics
        self.retry_seconds = RETRY_PERIODS * refresh_seconds
        self.current: DefaultModel | None = None
        self.problem: str | None = "no model loaded yet"
        self._failed: dict[str, float] = {}  # model id -> when it failed

    def _wanted(self) -> DefaultModel | None:
        source = self.source
        if isinstance(source, ModelFile):
            card = load_card(source.card or card_path_for(source.path))
            return DefaultModel(model_id(card.name, card.version), card)
        registry = self.registry()
        if source.version == "promoted":
            record = registry.promoted(source.name)
            if record is None:
                return None
        else:
            record = registry.get(source.name, source.version)
        return DefaultModel(model_id(record.name, record.version), record.card)

    async def refresh(self) -> bool:
        """Switch to the configured model if it changed and loads; True when it switched."""
        try:
            wanted = await asyncio.to_thread(self._wanted)
        except ClimateError as exc:
            self._note(f"cannot read the model registry: {exc}")
            return False
        if wanted is None:
            self._note(f"model {self.source_name} has no promoted version in the registry")
            return False
        if self.current is not None and wanted.model_id == self.current.model_id:
            return False
        failed_at = self._failed.get(wanted.model_id)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_seconds:
            return False
        try:
            await self.warm(wanted.model_id)
        except (ModelError, RayError, RayServeException) as exc:
            self._failed[wanted.model_id] = time.monotonic()
            self.metrics.model_switches.inc(tags={"model": wanted.model_id, "outcome": "failed"})
            kept = f"; {self.current.model_id} stays the default" if self.current else ""
            self._note(f"model {wanted.model_id} failed to load: {exc}{kept}")
            return False
        previous = self.current
        self.current = wanted  # one reference: requests see the old or the new default
        self.problem = None
        self._failed.pop(wanted.model_id, None)
        self.metrics.model_switches.inc(tags={"model": wanted.model_id, "outcome": "ok"})
        was = f" (was {previous.model_id})" if previous else ""
        log.info("default model is now %s%s", wanted.model_id, was)
        return True

    @property
    def source_name(self) -> str:
        source = self.source
        return source.name if isinstance(source, RegistryModel) else str(source.path)

    def _note(self, reason: str) -> None:
        if reason != self.problem:
            log.warning("%s", reason)
        self.problem = reason
