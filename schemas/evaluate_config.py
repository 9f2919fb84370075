"""``climate evaluate``: which model, data, period and lead times; where the report goes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from schemas.config import RUN_ID_PATTERN, StorageOptions, StrictModel
from schemas.model_source import ModelSource
from schemas.train_config import Split, sorted_lead_hours


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

    _check_leads = field_validator("lead_hours")(sorted_lead_hours)
