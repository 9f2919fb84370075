"""``climate predict``: which model, which initial times, which lead times, where to write."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from schemas.config import RUN_ID_PATTERN, RayConfig, StorageOptions, StrictModel
from schemas.model_source import ModelSource


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no time zone; write it as ...Z (UTC)")
    return value


class InitList(StrictModel):
    """These initial times (UTC)."""

    kind: Literal["list"]
    times: list[datetime] = Field(min_length=1)

    @field_validator("times")
    @classmethod
    def _utc_times(cls, times: list[datetime]) -> list[datetime]:
        return [_utc(t) for t in times]


class InitRange(StrictModel):
    """Every ``step_hours`` from ``start`` to ``end`` (both included)."""

    kind: Literal["range"]
    start: datetime
    end: datetime
    step_hours: int = Field(default=24, ge=1)

    _utc_bounds = field_validator("start", "end")(_utc)

    @model_validator(mode="after")
    def _ordered(self) -> InitRange:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class InitLatest(StrictModel):
    """The newest ``count`` times of the store, ``step_hours`` apart, newest last."""

    kind: Literal["latest"]
    count: int = Field(default=1, ge=1)
    step_hours: int = Field(default=1, ge=1)


InitTimes = Annotated[InitList | InitRange | InitLatest, Field(discriminator="kind")]


class LeadRange(StrictModel):
    """Every ``step_hours`` up to ``max_hours`` (included)."""

    max_hours: int = Field(ge=1)
    step_hours: int = Field(default=1, ge=1)

    @property
    def hours(self) -> list[int]:
        return list(range(self.step_hours, self.max_hours + 1, self.step_hours))


class ZarrOutput(StrictModel):
    """The forecast store: each run in its own Zarr directory, the committed one named by an
    atomic pointer (see ``pipelines.forecast.store``)."""

    url: str
    lat_chunk: int = Field(default=256, ge=1)
    lon_chunk: int = Field(default=256, ge=1)
    keep_runs: int = Field(
        default=3, ge=1, description="committed runs kept for time travel (the latest included)"
    )


class ForecastOutput(StrictModel):
    """Where forecasts go: the Zarr store, and the ``forecasts`` table when ``write_sql``."""

    zarr: ZarrOutput
    write_sql: bool = True
    sql_rows_per_copy: int = Field(default=200_000, ge=1_000, description="rows per COPY chunk")


class ForecastConfig(StrictModel):
    """``climate predict``: an ONNX model rolled out from analysis initial conditions."""

    analysis: str = Field(description="analysis Zarr store URL (local path or s3://)")
    model: ModelSource
    init_times: InitTimes
    lead_times: list[int] | LeadRange = Field(description="hours, or {max_hours, step_hours}")
    max_lead_hours: int = Field(default=240, ge=1, description="refuse longer lead times")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=4, ge=1, description="initial times per model call")
    concurrency: int | None = Field(
        default=None, ge=1, description="predictor actors; all CPUs (GPUs) / per-actor share"
    )
    cpus_per_actor: float = Field(default=1.0, gt=0, description="also ORT intra-op threads")
    gpus_per_actor: float = Field(default=1.0, gt=0, le=1, description="with device cuda")
    output: ForecastOutput
    run_id: str | None = Field(
        default=None, pattern=RUN_ID_PATTERN, description="a re-run of the same id replaces it"
    )
    ray: RayConfig = RayConfig()
    storage: StorageOptions = StorageOptions()

    @field_validator("lead_times")
    @classmethod
    def _positive(cls, value: list[int] | LeadRange) -> list[int] | LeadRange:
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one lead time")
            if any(hours < 1 for hours in value):
                raise ValueError(f"lead times must be positive hours, got {value}")
        return value

    @property
    def lead_hours(self) -> list[int]:
        """Sorted unique lead times in hours."""
        hours = self.lead_times if isinstance(self.lead_times, list) else self.lead_times.hours
        return sorted(set(hours))
