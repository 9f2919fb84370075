"""What a forecast run will do, checked against the model and the store before any compute."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from pipelines.analysis_store import StoreState, to_seconds
from pipelines.errors import ConfigError, SchemaError
from schemas.forecast_config import ForecastConfig, InitLatest, InitList, InitRange
from schemas.model_card import ModelCard

HOUR = 3600
_SHOWN = 5


@dataclass(frozen=True)
class ForecastPlan:
    """The resolved initial times and lead times of one run.

    ``steps`` model calls reach the longest lead; ``keep_steps`` (1-based) are the calls whose
    output is a requested lead time.
    """

    init_seconds: np.ndarray  # int64 epoch seconds, sorted unique
    lead_hours: tuple[int, ...]
    steps: int
    keep_steps: tuple[int, ...]

    @property
    def n_inits(self) -> int:
        return len(self.init_seconds)


def _iso(seconds: int) -> str:
    return str(np.datetime64(int(seconds), "s")) + "Z"


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def requested_inits(config: ForecastConfig, card: ModelCard, store_times: np.ndarray) -> np.ndarray:
    """Epoch seconds of the initial times the config asks for (not yet checked)."""
    spec = config.init_times
    if isinstance(spec, InitList):
        return np.unique(np.asarray([_epoch(t) for t in spec.times], dtype=np.int64))
    if isinstance(spec, InitRange):
        start, end = _epoch(spec.start), _epoch(spec.end)
        return np.arange(start, end + 1, spec.step_hours * HOUR, dtype=np.int64)
    if isinstance(spec, InitLatest):
        if store_times.size == 0:
            raise SchemaError(f"{config.analysis}: the analysis store holds no times; ingest first")
        newest = int(store_times.max())
        return newest - spec.step_hours * HOUR * np.arange(spec.count - 1, -1, -1, dtype=np.int64)
    raise ConfigError(f"unknown init_times kind {spec!r}")


def check_history(inits: np.ndarray, card: ModelCard, store_times: np.ndarray, where: str) -> None:
    """Every input time of every initial time must be in the store; SchemaError if not."""
    dt = card.inputs.time_step_hours * HOUR
    offsets = dt * np.arange(card.inputs.history - 1, -1, -1, dtype=np.int64)
    needed = (inits[:, None] - offsets[None, :]).ravel()
    missing = np.setdiff1d(needed, store_times)
    if missing.size:
        first, last = (
            (_iso(store_times.min()), _iso(store_times.max()))
            if store_times.size
            else (
                "-",
                "-",
            )
        )
        shown = ", ".join(_iso(s) for s in missing[:_SHOWN])
        more = f" and {missing.size - _SHOWN} more" if missing.size > _SHOWN else ""
        raise SchemaError(
            f"{where}: {missing.size} input time(s) missing from the analysis store: {shown}{more}"
            f" (the store holds {store_times.size} times, {first} .. {last}; model "
            f"{card.name} needs {card.inputs.history} field(s) {card.inputs.time_step_hours} h "
            "apart up to each initial time): pick initial times inside the store or ingest "
            "the missing times"
        )


def check_leads(lead_hours: list[int], card: ModelCard, max_lead_hours: int) -> tuple[int, ...]:
    """The model calls whose outputs are the lead times; ConfigError for unreachable leads."""
    dt = card.inputs.time_step_hours
    off_step = [h for h in lead_hours if h % dt]
    if off_step:
        raise ConfigError(
            f"lead time(s) {off_step} h are not multiples of model {card.name}'s time step of "
            f"{dt} h: ask for multiples of {dt}"
        )
    limits = [max_lead_hours] + ([card.inputs.max_lead_hours] if card.inputs.max_lead_hours else [])
    limit = min(limits)
    beyond = [h for h in lead_hours if h > limit]
    if beyond:
        source = (
            "the model card's max_lead_hours"
            if card.inputs.max_lead_hours == limit
            else "max_lead_hours in the config"
        )
        raise ConfigError(
            f"lead time(s) {beyond} h are beyond {limit} h ({source}): shorten the lead times"
            + (" or raise max_lead_hours" if source != "the model card's max_lead_hours" else "")
        )
    return tuple(h // dt for h in lead_hours)


def build_plan(config: ForecastConfig, card: ModelCard, state: StoreState) -> ForecastPlan:
    """Resolve and check the run's initial and lead times.

    Raises
    ------
    ConfigError
        A lead time the model cannot reach.
    SchemaError
        Initial times (or their history) missing from the store.
    """
    lead_hours = config.lead_hours
    keep = check_leads(lead_hours, card, config.max_lead_hours)
    store_times = to_seconds(state.times)
    inits = requested_inits(config, card, store_times)
    check_history(inits, card, store_times, config.analysis)
    return ForecastPlan(
        init_seconds=np.sort(inits), lead_hours=tuple(lead_hours), steps=max(keep), keep_steps=keep
    )
