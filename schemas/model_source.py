"""Where a job takes its model from: a local ONNX file with its card, or the model registry."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from schemas.config import StrictModel


class ModelFile(StrictModel):
    """An ONNX file and its card (``model.card.json`` beside the file when omitted)."""

    kind: Literal["file"] = "file"
    path: str
    card: str | None = None


class RegistryModel(StrictModel):
    """A model from the registry (MODEL_REGISTRY_URL): a version, or the promoted one."""

    kind: Literal["registry"] = "registry"
    name: str = Field(min_length=1)
    version: str = Field(default="promoted", description="a version, or `promoted`")


def _model_kind(value: Any) -> str:
    """``kind`` when given; otherwise a section with a ``path`` is a file, else the registry."""
    if isinstance(value, dict):
        return str(value.get("kind") or ("file" if "path" in value else "registry"))
    return str(getattr(value, "kind", "file"))


ModelSource = Annotated[
    Annotated[ModelFile, Tag("file")] | Annotated[RegistryModel, Tag("registry")],
    Discriminator(_model_kind),
]
