"""Latitude-weighted scores of forecast fields: pure numpy functions.

Every function takes arrays whose last two axes are ``(lat, lon)`` and a weight array from
:func:`pipelines.climatology.lat_weights`; means run over every leading axis (initial times)
and the grid.
"""

from __future__ import annotations

import numpy as np


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64) * weights))


def rmse(forecast: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    """sqrt(mean(w * (forecast - truth)^2))."""
    error = np.asarray(forecast, np.float64) - truth
    return float(np.sqrt(_weighted_mean(error**2, weights)))


def bias(forecast: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    """mean(w * (forecast - truth)): positive when the forecast is too high."""
    return _weighted_mean(np.asarray(forecast, np.float64) - truth, weights)


def mae(forecast: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    """mean(w * |forecast - truth|)."""
    return _weighted_mean(np.abs(np.asarray(forecast, np.float64) - truth), weights)


def acc(
    forecast: np.ndarray, truth: np.ndarray, climatology: np.ndarray, weights: np.ndarray
) -> float:
    """Anomaly correlation coefficient vs ``climatology``, mean over initial times.

    For each leading index (one forecast field) the uncentred, latitude-weighted correlation
    ``sum(w f' o') / sqrt(sum(w f'^2) sum(w o'^2))`` of the anomalies ``f' = forecast - clim``
    and ``o' = truth - clim``; then the mean over fields. NaN where an anomaly is zero
    everywhere (e.g. the climatology forecast itself).
    """
    f = np.asarray(forecast, np.float64) - climatology
    o = np.asarray(truth, np.float64) - climatology
    f = f.reshape(-1, *f.shape[-2:])
    o = o.reshape(-1, *o.shape[-2:])
    num = (weights * f * o).sum(axis=(-2, -1))
    den = np.sqrt((weights * f * f).sum(axis=(-2, -1)) * (weights * o * o).sum(axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_field = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(np.mean(per_field)) if not np.isnan(per_field).any() else float("nan")


def rmse_map(forecast: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per grid point RMSE over the leading axes: [lat, lon] (no weighting)."""
    error = np.asarray(forecast, np.float64) - truth
    return np.sqrt(np.mean(error.reshape(-1, *error.shape[-2:]) ** 2, axis=0))


def bias_map(forecast: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per grid point mean error over the leading axes: [lat, lon]."""
    error = np.asarray(forecast, np.float64) - truth
    return np.mean(error.reshape(-1, *error.shape[-2:]), axis=0)
