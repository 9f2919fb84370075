"""The model card: what an ONNX forecast model takes, gives, and was trained on.

A card travels beside every ONNX file (``model.onnx`` + ``model.card.json``). Batch prediction,
online serving, evaluation and the registry all read it; ``pipelines.models.runtime`` checks it
against the ONNX graph (handshake) and against the analysis store before any compute.

ONNX interface of every model (tensor names from :class:`TensorNames`):

- input ``fields``: float32 ``[batch, history, channels, n_lat, n_lon]``, raw physical units,
  oldest first; the last one is the initial time.
- input ``hour``: int64 ``[batch]``, hour of day (UTC, 0..23) of the *target* time, i.e. the
  last input time plus ``time_step_hours``.
- output ``next``: float32 ``[batch, channels, n_lat, n_lon]``, the fields one time step later.

Rollout: append the output to the history, drop the oldest field, advance the target hour by
the time step, repeat. Channels are ``variables x levels`` in :attr:`ModelCard.channels` order.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from schemas.config import StrictModel, _known_variables

CARD_SUFFIX = ".card.json"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class GridSpec(StrictModel):
    """The model's grid: latitudes descending, longitudes ascending in [-180, 180)."""

    lat: list[float] = Field(min_length=1)
    lon: list[float] = Field(min_length=1)

    @field_validator("lat")
    @classmethod
    def _descending(cls, lat: list[float]) -> list[float]:
        if any(b >= a for a, b in itertools.pairwise(lat)):
            raise ValueError("latitudes must be strictly descending (north to south)")
        if any(abs(v) > 90 for v in lat):
            raise ValueError("latitudes must lie in [-90, 90]")
        return lat

    @field_validator("lon")
    @classmethod
    def _ascending(cls, lon: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(lon)):
            raise ValueError("longitudes must be strictly ascending")
        if any(v < -180 or v >= 180 for v in lon):
            raise ValueError(
                "longitudes must lie in [-180, 180); convert 0..360 with ((x+180)%360)-180"
            )
        return lon

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)


class ModelIO(StrictModel):
    """What the model reads from the analysis store."""

    variables: list[str] = Field(min_length=1, description="lexicon short names")
    levels: list[int] = Field(
        default_factory=list, description="pressure levels (hPa) of every variable; [] for none"
    )
    history: int = Field(ge=1, description="number of past hourly fields fed in, oldest first")
    time_step_hours: int = Field(default=1, ge=1, description="hours advanced by one model call")
    max_lead_hours: int | None = Field(
        default=None, ge=1, description="longest lead time the model is meant for; None: no limit"
    )
    grid: GridSpec

    _check_variables = field_validator("variables")(_known_variables)

    @field_validator("levels")
    @classmethod
    def _unique_levels(cls, levels: list[int]) -> list[int]:
        if len(set(levels)) != len(levels):
            raise ValueError(f"levels listed twice: {levels}")
        return levels


class ModelOutputs(StrictModel):
    """What the model writes: the same variables as it reads (it is rolled out)."""

    variables: list[str] = Field(min_length=1)

    _check_variables = field_validator("variables")(_known_variables)


class TensorNames(StrictModel):
    """Names of the ONNX graph's tensors."""

    fields: str = "fields"
    hour: str = "hour"
    output: str = "next"


class ModelCard(StrictModel):
    """Everything needed to run, trace and judge one ONNX model file."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    sha256: str = Field(pattern=SHA256_PATTERN, description="hex sha256 of the ONNX file bytes")
    created_at: datetime
    inputs: ModelIO
    outputs: ModelOutputs
    tensors: TensorNames = TensorNames()
    normalisation: dict[str, Any] = Field(
        default_factory=dict, description="descriptive; the constants are baked into the graph"
    )
    training: dict[str, Any] = Field(default_factory=dict, description="period, seed, ...")
    code_version: str = "unknown"
    scores: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must carry a time zone, e.g. 2025-01-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _rollable(self) -> ModelCard:
        if self.outputs.variables != self.inputs.variables:
            raise ValueError(
                f"outputs.variables {self.outputs.variables} must equal inputs.variables "
                f"{self.inputs.variables} (same order): outputs are fed back as inputs"
            )
        return self

    @property
    def channels(self) -> list[tuple[str, int | None]]:
        """``(variable, level)`` of each channel, variable-major; level None without levels."""
        levels: list[int | None] = list(self.inputs.levels) or [None]
        return [(name, level) for name in self.inputs.variables for level in levels]

    def identity(self) -> dict[str, str]:
        """Name, version and file hash: how run summaries and ledgers name the model."""
        return {"model": self.name, "version": self.version, "sha256": self.sha256}

    @property
    def channel_names(self) -> list[str]:
        """``t2m`` or ``t@500`` for each channel."""
        return [name if level is None else f"{name}@{level}" for name, level in self.channels]

    def write(self, path: str | Path) -> None:
        """Write the card as indented JSON."""
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """Read and validate a card file; raises OSError or ValueError (pydantic)."""
        return cls.model_validate_json(Path(path).read_text())


def card_path_for(onnx_path: str | Path) -> Path:
    """The conventional card path beside an ONNX file: ``model.onnx`` -> ``model.card.json``."""
    path = Path(onnx_path)
    return path.with_name(path.stem + CARD_SUFFIX)
