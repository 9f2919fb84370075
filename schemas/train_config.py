"""``climate train``: which data, which split, which model design, which schedule, where to."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.config import RUN_ID_PATTERN, StorageOptions, StrictModel, _known_variables


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{value.isoformat()} has no time zone; write it as ...Z (UTC)")
    return value


class TimeRange(StrictModel):
    """Times ``start <= t < end`` (UTC); ``None`` reaches the start or the end of the store."""

    start: datetime | None = None
    end: datetime | None = None

    _utc_bounds = field_validator("start", "end")(_utc)

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class Split(StrictModel):
    """The held-out period (initial times scored) and the training periods.

    ``train`` defaults to every time outside ``held_out``, before and after it. The
    climatology baseline and the model's normalisation come from ``train`` only.
    """

    held_out: TimeRange
    train: list[TimeRange] | None = Field(default=None, description="default: all but held_out")

    @model_validator(mode="after")
    def _disjoint(self) -> Split:
        for period in self.train or []:
            if _overlap(period, self.held_out):
                raise ValueError(
                    f"train period {_show(period)} overlaps held_out {_show(self.held_out)}: "
                    "the held-out period must never be trained on"
                )
        return self


def sorted_lead_hours(value: list[int]) -> list[int]:
    """Scored lead times: positive hours, sorted, each once."""
    if any(hours < 1 for hours in value):
        raise ValueError(f"lead times must be positive hours, got {value}")
    return sorted(set(value))


def _overlap(a: TimeRange, b: TimeRange) -> bool:
    starts_before_b_ends = b.end is None or a.start is None or a.start < b.end
    ends_after_b_starts = a.end is None or b.start is None or a.end > b.start
    return starts_before_b_ends and ends_after_b_starts


def _show(period: TimeRange) -> str:
    start = "start" if period.start is None else period.start.isoformat()
    end = "end" if period.end is None else period.end.isoformat()
    return f"[{start}, {end})"


class AnalysisRef(StrictModel):
    """The analysis Zarr store read, and the channels taken from it."""

    url: str = Field(description="local path or s3:// URL of the analysis store")
    variables: list[str] = Field(default=["t2m"], min_length=1)
    levels: list[int] = Field(default_factory=list, description="pressure levels; [] for none")

    _check_variables = field_validator("variables")(_known_variables)


class ModelDesign(StrictModel):
    """The residual convolutional one-step model, in normalised anomaly space.

    Inputs: the anomaly (vs the training hour-of-day climatology) at ``lags`` hours back, the
    mean of the last ``mean_window`` inputs, sin/cos of the target hour and lat/lon coordinates.
    Output: last anomaly + a linear ``skip_kernel`` stencil + a small CNN (zero-initialised;
    none when ``layers`` is 0). ``invariant`` and ``regime``: see
    :class:`pipelines.training.model.AnomalyCore`.
    """

    history: int = Field(default=24, ge=1, description="input fields, oldest first")
    lags: list[int] = Field(default=[0, 1, 2, 5, 11, 23], min_length=1)
    mean_window: int = Field(default=24, ge=0, description="0: no running-mean input")
    hidden: int = Field(default=16, ge=1)
    layers: int = Field(default=2, ge=0, description="hidden conv layers; 0: linear stencil only")
    kernel: int = Field(default=3, ge=1)
    skip_kernel: int = Field(default=5, ge=1)
    invariant: bool = Field(
        default=False,
        description="CNN inputs relative to the latest anomaly, which feeds only the stencil",
    )
    regime: bool = Field(
        default=False,
        description="stencil inputs scaled by the field's 24 h change (needs lag 24)",
    )
    persistence_regime: bool = Field(
        default=False,
        description="stencil inputs also scaled by the field's 24 h pattern correlation",
    )
    damping: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="after training, each step's anomaly is multiplied by this: a shrinkage "
        "towards the climatology that compounds with lead time (1: none)",
    )

    @model_validator(mode="after")
    def _fits_history(self) -> ModelDesign:
        if self.lags[0] != 0 or sorted(set(self.lags)) != self.lags:
            raise ValueError(f"lags {self.lags} must be ascending, unique and start at 0")
        if self.lags[-1] >= self.history:
            raise ValueError(f"lag {self.lags[-1]} needs history > {self.lags[-1]}")
        if (self.regime or self.persistence_regime) and 24 not in self.lags:
            raise ValueError(f"regime needs lag 24 among lags {self.lags} (and history >= 25)")
        if self.mean_window > self.history:
            raise ValueError(f"mean_window {self.mean_window} > history {self.history}")
        if self.kernel % 2 == 0 or self.skip_kernel % 2 == 0:
            raise ValueError("kernel and skip_kernel must be odd (same-size padding)")
        return self


class Schedule(StrictModel):
    """The seeded training schedule: optional one-step pretraining, then rollout training."""

    seed: int = 0
    pre_epochs: int = Field(default=0, ge=0, description="one-step (teacher-forced) epochs")
    epochs: int = Field(default=20, ge=1, description="rollout epochs")
    rollout_steps: int = Field(default=24, ge=1, description="steps K of the rollout loss")
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    stride: int = Field(default=3, ge=1, description="take every stride-th rollout window")
    lead_weight_power: float = Field(
        default=1.0,
        ge=0,
        description="step k's loss weight is min(persistence, climatology MSE at k)^-power",
    )
    grad_clip: float = Field(default=0.0, ge=0, description="0: off; else the max gradient norm")
    block_climatology_days: int = Field(
        default=0,
        ge=0,
        description="N > 0: a window's anomalies are taken from the climatology of the training "
        "period less the N-day block its initial time lies in, as a held-out period's are",
    )
    members: int = Field(
        default=1,
        ge=1,
        description="train this many members (seeds seed, seed + 1, ...) and ship the mean of "
        "their parameters (needs design.layers 0: a step linear in its parameters)",
    )
    threads: int = Field(default=1, ge=1, description="torch intra-op threads")
    device: Literal["cpu", "cuda"] = Field(
        default="cpu",
        description="where the fit runs; cuda needs a CUDA build of torch and a GPU (the bytes "
        "differ from a CPU fit's: the shipped model is trained on the CPU)",
    )


class TrainOutput(StrictModel):
    """Where the ONNX file and its card go, and what the card calls the model."""

    dir: str = Field(description="writes model.onnx and model.card.json here")
    name: str = Field(default="t2m-resconv", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
    version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$",
        description="default: the first 12 hex digits of the ONNX file's sha256",
    )
    register_model: bool = Field(default=False, description="also register it in the registry")
    tolerance_k: float = Field(
        default=1e-3,
        gt=0,
        description="max |ONNX Runtime - torch| allowed by the export check, in the variables' "
        "units (K for t2m; raise it for large-valued variables such as msl in Pa)",
    )


class TrainConfig(StrictModel):
    """``climate train``: train, export to ONNX + card, score on the held-out period."""

    analysis: AnalysisRef
    split: Split
    design: ModelDesign = ModelDesign()
    schedule: Schedule = Schedule()
    output: TrainOutput
    lead_hours: list[int] = Field(
        default_factory=lambda: list(range(1, 25)), min_length=1, description="scored leads"
    )
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    storage: StorageOptions = StorageOptions()

    _check_leads = field_validator("lead_hours")(sorted_lead_hours)

    @model_validator(mode="after")
    def _members_average_linearly(self) -> TrainConfig:
        if self.schedule.members > 1 and self.design.layers > 0:
            raise ValueError(
                f"schedule.members {self.schedule.members} averages the members' parameters, "
                "which is their mean forecast step only for a linear stencil: set "
                "design.layers 0 or schedule.members 1"
            )
        return self
