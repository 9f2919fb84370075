"""What training and evaluation both derive from analysis fields: the hour-of-day climatology of a
training period and the latitude weights of a grid."""

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


def lat_weights(lat: np.ndarray, n_lon: int) -> np.ndarray:
    """cos(latitude) weights [lat, lon], normalised to mean 1 over the grid."""
    column = np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64)))
    weights = np.repeat(column[:, None], n_lon, axis=1)
    mean = weights.mean()
    if not mean > 0:
        raise ValueError("latitude weights sum to zero: the grid holds only the poles")
    return weights / mean
