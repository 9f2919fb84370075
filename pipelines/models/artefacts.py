"""Model artefacts on disk: reading a card, hashing a file, checking a file against its card."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipelines.errors import ModelError
from schemas.model_card import ModelCard


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, card: ModelCard) -> None:
    """Refuse a model file whose bytes are not the ones its card was written for."""
    try:
        found = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror})") from exc
    if found != card.sha256:
        raise ModelError(
            f"{path}: sha256 {found} does not match the card's {card.sha256} "
            f"({card.name} {card.version}); the file and its card do not belong together: use "
            "the card written with this file, or re-export the model and its card"
        )


def load_card(path: str | Path) -> ModelCard:
    """Read a model card, translating every failure into a :class:`ModelError`."""
    try:
        return ModelCard.read(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model card ({exc.strerror})") from exc
    except ValueError as exc:
        raise ModelError(f"{path}: not a valid model card: {exc}") from exc
