"""Autoregressive rollouts of an ONNX model from every initial time, through ModelRuntime."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipelines.models.runtime import ModelRuntime


def initial_history(
    values: np.ndarray,
    hours: np.ndarray,
    climatology: np.ndarray,
    init: int,
    history: int,
    step: int = 1,
) -> np.ndarray:
    """The ``history`` fields ``step`` hours apart ending at time index ``init``, oldest first.

    Fields before the start of the data are filled with the climatology at their hour plus
    the first field's anomaly, so initial times in the first hours still get a forecast.

    Returns
    -------
    numpy.ndarray
        float32 [history, channels, lat, lon].
    """
    index = init - step * np.arange(history - 1, -1, -1)
    out = values[np.maximum(index, 0)].astype(np.float32, copy=True)
    before = index < 0
    if before.any():
        anomaly = values[0] - climatology[hours[0]]
        out[before] = climatology[(hours[0] + index[before]) % 24] + anomaly[None]
    return out


def rollout_forecasts(
    runtime: ModelRuntime,
    values: np.ndarray,
    hours: np.ndarray,
    climatology: np.ndarray,
    inits: np.ndarray,
    leads: Sequence[int],
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Forecasts of ``runtime``'s model from time indices ``inits`` at ``leads`` (hours).

    Parameters
    ----------
    runtime
        A loaded model; its card gives the history length and the time step.
    values, hours
        [time, channels, lat, lon] analysis fields and their hour of day.
    climatology
        [24, channels, lat, lon]; pads histories that reach before the first field.
    inits
        Time indices of the initial times.
    leads
        Lead times in hours, ascending; each a multiple of the model's time step.
    batch_size
        Initial times per model call.
    progress
        Called with the number of initial times done after each batch.

    Returns
    -------
    numpy.ndarray
        float32 [len(inits), len(leads), channels, lat, lon].
    """
    card = runtime.card
    step = card.inputs.time_step_hours
    if any(lead % step for lead in leads):
        raise ValueError(f"lead times {list(leads)} must be multiples of the {step} h time step")
    keep = tuple(lead // step for lead in leads)
    inits = np.asarray(inits, dtype=np.int64)
    out = np.empty((len(inits), len(keep), *values.shape[1:]), dtype=np.float32)
    for lo in range(0, len(inits), batch_size):
        batch = inits[lo : lo + batch_size]
        state = np.stack(
            [
                initial_history(values, hours, climatology, int(i), card.inputs.history, step)
                for i in batch
            ]
        )
        out[lo : lo + len(batch)] = runtime.rollout(state, hours[batch], max(keep), keep=keep)
        if progress is not None:
            progress(len(batch))
    return out
