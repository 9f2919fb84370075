"""``climate evaluate``: which model, data, period and lead times; where the report goes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from schemas.config import StorageOptions, StrictModel
from schemas.train_config import RUN_ID_PATTERN, Split


class LocalModel(StrictModel):
    """An ONNX file and its card (``model.card.json`` beside the file when omitted)."""

    kind: Literal["file"] = "file"
    path: str
    card: str | None = None


class RegistryModel(StrictModel):
    """A registered model: a version, or ``promoted`` for the promoted one."""

    kind: Literal["registry"] = "registry"
    name: str
    version: str = "promoted"


def _model_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind") or ("registry" if "name" in value else "file"))
    return str(getattr(value, "kind", "file"))


ModelSource = Annotated[
    Annotated[LocalModel, Tag("file")] | Annotated[RegistryModel, Tag("registry")],
    Discriminator(_model_kind),
]


class ReportOutput(StrictModel):
    """Where the Markdown report and its PNG plots go."""

    dir: str = "output/reports/evaluate"
    map_leads: list[int] = Field(default=[1, 6, 24], description="leads of the error maps")


class EvaluateConfig(StrictModel):
    """Score a model's autoregressive rollouts against persistence and climatology."""

    analysis: str = Field(description="analysis Zarr store URL (local path or s3://)")
    model: ModelSource
    split: Split
    lead_hours: list[int] = Field(default_factory=lambda: list(range(1, 25)), min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int | None = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")
    batch_size: int = Field(default=32, ge=1, description="initial times per model call")
    record: bool = Field(default=True, description="write the scores into the skill table")
    report: ReportOutput = ReportOutput()
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    storage: StorageOptions = StorageOptions()

    @field_validator("lead_hours")
    @classmethod
    def _leads(cls, value: list[int]) -> list[int]:
        if any(hours < 1 for hours in value):
            raise ValueError(f"lead times must be positive hours, got {value}")
        return sorted(set(value))
