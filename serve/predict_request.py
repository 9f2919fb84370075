"""A predict request checked against the model's card: the job the predictor runs.

Every check happens here, before any compute, and a failure is a 400 naming the parameter:
the initial time (with a time zone), the lead times (positive, multiples of the model's time
step, within the configured limit and the card's ``max_lead_hours``), and the fields (shape
``[history, channels, lat, lon]`` of the card, finite values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from schemas.model_card import ModelCard
from serve.errors import bad_parameter
from serve.predictor import PredictJob


@dataclass(frozen=True)
class PredictMeta:
    """What a binary body's query parameters say (the JSON body carries the same)."""

    model: str | None
    init_time: datetime
    lead_hours: list[int]


def _one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise bad_parameter(name, f"given {len(values)} times; give it once")
    return values[0] if values else None


def parse_init_time(raw: str) -> datetime:
    """An ISO 8601 time with a time zone (``2025-01-01T06:00Z``); 400 naming init_time."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        raise bad_parameter(
            "init_time", f"{raw!r} is not an ISO 8601 time, e.g. 2025-01-01T06:00Z"
        ) from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise bad_parameter("init_time", f"{raw!r} has no time zone; write it as ...Z (UTC)")
    return value


def parse_meta(params: Mapping[str, list[str]]) -> PredictMeta:
    """``init_time``, ``lead_hours`` (comma lists or repeated) and ``model`` of a binary body."""
    raw_init = _one(params, "init_time")
    if raw_init is None:
        raise bad_parameter("init_time", "missing; give the initial time, e.g. 2025-01-01T06:00Z")
    raw_leads = [part for value in params.get("lead_hours", []) for part in value.split(",")]
    if not [part for part in raw_leads if part.strip()]:
        raise bad_parameter("lead_hours", "missing; give lead times in hours, e.g. 1,6,12")
    try:
        leads = [int(part) for part in raw_leads if part.strip()]
    except ValueError as exc:
        raise bad_parameter(
            "lead_hours", f"{','.join(raw_leads)!r} is not a list of whole hours"
        ) from exc
    return PredictMeta(_one(params, "model"), parse_init_time(raw_init), leads)


def check_lead_hours(lead_hours: Sequence[int], card: ModelCard, limit: int) -> list[int]:
    """Sorted unique lead hours the model can reach; 400 naming lead_hours otherwise."""
    leads = sorted(set(lead_hours))
    if not leads:
        raise bad_parameter("lead_hours", "empty; give at least one lead time")
    step = card.inputs.time_step_hours
    longest = min(limit, card.inputs.max_lead_hours or limit)
    if leads[0] < 1:
        raise bad_parameter("lead_hours", f"{leads[0]} is not a positive number of hours")
    if leads[-1] > longest:
        raise bad_parameter(
            "lead_hours",
            f"{leads[-1]} h is beyond the longest lead time served for {card.name} "
            f"({longest} h); ask for shorter lead times",
        )
    off = [lead for lead in leads if lead % step]
    if off:
        raise bad_parameter(
            "lead_hours",
            f"{off} are not multiples of the model's time step ({step} h)",
        )
    return leads


def check_fields(fields: np.ndarray, card: ModelCard) -> np.ndarray:
    """Fields of the card's shape [history, channels, lat, lon] and finite; 400 otherwise."""
    expected = (card.inputs.history, len(card.channels), *card.inputs.grid.shape)
    if fields.shape != expected:
        raise bad_parameter(
            "fields",
            f"shape {list(fields.shape)} does not fit model {card.name} {card.version}: "
            f"expected [history, channels, lat, lon] = {list(expected)} "
            f"(channels {card.channel_names})",
        )
    if not np.all(np.isfinite(fields)):
        raise bad_parameter("fields", "holds NaN or infinite values; fill them first")
    return np.ascontiguousarray(fields, dtype=np.float32)


def make_job(
    card: ModelCard,
    fields: np.ndarray,
    init_time: datetime,
    lead_hours: Sequence[int],
    max_lead_hours: int,
) -> tuple[PredictJob, list[int]]:
    """The predictor's job for a checked request, and the sorted lead hours it answers.

    Raises
    ------
    ApiError
        400 naming the parameter that does not fit the model or the limits.
    """
    leads = check_lead_hours(lead_hours, card, max_lead_hours)
    checked = check_fields(fields, card)
    step = card.inputs.time_step_hours
    job = PredictJob(
        fields=checked,
        init_hour=init_time.astimezone(UTC).hour,
        keep=tuple(lead // step for lead in leads),
    )
    return job, leads


def valid_times(init_time: datetime, lead_hours: Sequence[int]) -> list[str]:
    """ISO 8601 UTC valid times of the lead hours."""
    start = init_time.astimezone(UTC)
    return [
        (start + timedelta(hours=lead)).isoformat().replace("+00:00", "Z") for lead in lead_hours
    ]
