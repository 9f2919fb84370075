"""The reference forecasts every model is judged against: persistence and climatology.

The climatology is the hour-of-day mean of the training period only, so scores on a
held-out period never see its data.
"""

from __future__ import annotations

import numpy as np

from pipelines.errors import SchemaError


def hour_of_day_climatology(
    values: np.ndarray, hours: np.ndarray, train_mask: np.ndarray
) -> np.ndarray:
    """Mean field per hour of day over the training times.

    Parameters
    ----------
    values
        [time, ...] fields.
    hours
        Hour of day (0..23) of every time.
    train_mask
        Boolean [time]: the times the climatology may use.

    Returns
    -------
    numpy.ndarray
        float32 [24, ...], the mean (in float64) of the training fields at each hour.

    Raises
    ------
    SchemaError
        Some hour of day has no training time.
    """
    train_mask = np.asarray(train_mask, dtype=bool)
    missing = [h for h in range(24) if not np.any(train_mask & (hours == h))]
    if missing:
        raise SchemaError(
            f"the training period has no field at hour(s) {missing} of the day: the "
            "climatology needs at least one full day; lengthen split.train"
        )
    table = [values[train_mask & (hours == h)].astype(np.float64).mean(axis=0) for h in range(24)]
    return np.stack(table).astype(np.float32)


def persistence_forecast(values: np.ndarray, inits: np.ndarray, lead: int) -> np.ndarray:
    """The field at each initial time, as the forecast for ``lead`` steps later."""
    del lead  # persistence does not depend on the lead time
    return values[np.asarray(inits)]


def climatology_forecast(
    climatology: np.ndarray, hours: np.ndarray, inits: np.ndarray, lead: int
) -> np.ndarray:
    """The climatology at the verifying hour ``hours[init] + lead``."""
    return climatology[(hours[np.asarray(inits)] + lead) % 24]
