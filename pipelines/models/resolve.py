"""From a model source to a verified local model, and from ``auto`` to a device: one of each.

Forecast, evaluate and the server call :func:`resolve_model` with the config's ``model``
section (a file with its card, or ``{name, version | promoted}`` from the registry) and
:func:`resolve_device` with the config's ``device``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from pipelines.db import make_engine
from pipelines.errors import ModelError
from pipelines.models.artefacts import load_card, verify_sha256
from pipelines.models.registry import ModelRegistry
from pipelines.models.runtime import Device, Provider, cuda_available
from schemas.config import StorageOptions
from schemas.model_card import ModelCard, card_path_for
from schemas.model_source import ModelFile, RegistryModel
from schemas.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """A local ONNX file whose bytes match its card (sha256 checked)."""

    path: Path
    card: ModelCard

    @property
    def label(self) -> str:
        return f"{self.card.name} {self.card.version}"


def _from_file(source: ModelFile) -> ResolvedModel:
    path = Path(source.path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; set model.path to an ONNX file")
    card = load_card(source.card or card_path_for(path))
    verify_sha256(path, card)
    return ResolvedModel(path, card)


def _from_registry(source: RegistryModel, registry: ModelRegistry) -> ResolvedModel:
    version = None if source.version == "promoted" else source.version
    path, card = registry.fetch(source.name, version)
    return ResolvedModel(path, card)


def resolve_model(
    source: ModelFile | RegistryModel,
    settings: Settings,
    storage: StorageOptions | None = None,
    engine: Engine | None = None,
) -> ResolvedModel:
    """The verified local model a config's ``model`` section names.

    Parameters
    ----------
    source
        A file with its card, or a registry name with a version or ``promoted``.
    settings
        Where the registry is (``MODEL_REGISTRY_URL``, ``DATABASE_URL``).
    storage
        Object-store options for the registry.
    engine
        The registry's database; one is made from ``settings`` (and disposed) when None.

    Raises
    ------
    ModelError
        No such file or version, no promoted version, or a file not matching its card.
    """
    if isinstance(source, ModelFile):
        return _from_file(source)
    own = engine is None
    engine = engine or make_engine(settings.database_url)
    try:
        return _from_registry(source, ModelRegistry.from_settings(engine, settings, storage))
    finally:
        if own:
            engine.dispose()


def resolve_device(asked: Device, gpus: float | None = None) -> Provider:
    """The device a model runs on: ``cpu``, ``cuda``, or for ``auto`` the one present.

    Parameters
    ----------
    asked
        ``auto``, ``cpu`` or ``cuda``.
    gpus
        GPUs where the model will run (a Ray cluster's ``GPU`` resource); None for this
        process, where only ONNX Runtime's CUDA provider is checked.

    Raises
    ------
    ModelError
        ``cuda`` was asked for and there is no GPU or no CUDA provider; names the fix.
    """
    has_gpus = gpus is None or gpus > 0
    if asked == "cpu":
        return "cpu"
    if asked == "cuda":
        if not has_gpus:
            raise ModelError(
                "device 'cuda' was asked for but the Ray cluster has no GPU; add GPU workers "
                "or set device: cpu"
            )
        if not cuda_available():
            raise ModelError(
                "device 'cuda' was asked for but this ONNX Runtime has no CUDAExecutionProvider; "
                "install the gpu extra (pip install -e '.[gpu]') or set device: cpu"
            )
        return "cuda"
    if asked != "auto":
        raise ModelError(f"device {asked!r} is not one of auto, cpu, cuda")
    chosen: Provider = "cuda" if has_gpus and cuda_available() else "cpu"
    reason = (
        "CUDAExecutionProvider present"
        if chosen == "cuda"
        else ("no CUDAExecutionProvider" if has_gpus else "no GPU in the cluster")
    )
    log.info("device auto: using %s (%s)", chosen, reason)
    return chosen
