"""One evaluation: the training climatology, rollouts from every held-out init, the scores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.climatology import hour_of_day_climatology
from pipelines.errors import SchemaError
from pipelines.evaluate.rollout import rollout_forecasts
from pipelines.evaluate.scoring import Scores, score_forecasts
from pipelines.fields import Fields, split_masks
from pipelines.models.runtime import ModelRuntime
from schemas.train_config import Split


def evaluate_model(
    runtime: ModelRuntime,
    fields: Fields,
    split: Split,
    leads: list[int],
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> Scores:
    """Score ``runtime``'s model on the held-out initial times of ``split``.

    Every time in ``split.held_out`` is an initial time; it is scored at a lead when its
    verifying time is in ``fields``. The climatology (baseline, ACC reference, padding of
    histories before the first field) comes from ``split.train`` only.

    Raises
    ------
    SchemaError
        The fields' channels are not the model's, or a period holds no time.
    """
    if tuple(fields.channel_names) != tuple(runtime.card.channel_names):
        raise SchemaError(
            f"the fields hold channels {list(fields.channel_names)}, the model "
            f"{runtime.card.name} reads {runtime.card.channel_names}: load the card's channels"
        )
    train_mask, held = split_masks(fields.times, split.held_out, split.train)
    hours = fields.hours
    climatology = hour_of_day_climatology(fields.values, hours, train_mask)
    inits = np.nonzero(held)[0]
    forecasts = rollout_forecasts(
        runtime, fields.values, hours, climatology, inits, leads, batch_size, progress
    )
    return score_forecasts(
        forecasts,
        fields.values,
        hours,
        fields.times,
        climatology,
        inits,
        leads,
        fields.lat,
        fields.lon,
        fields.channel_names,
    )
