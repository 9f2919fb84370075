"""Training samples: normalised anomalies and the windows ``(history, targets)`` cut from them.

A window is ``history + steps`` consecutive hourly fields, all inside the training period, so
no window straddles the held-out period (training data may lie before and after it).
"""

from __future__ import annotations

import numpy as np


def window_starts(mask: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """Start indices ``s`` with ``mask[s : s + length]`` all True, every ``stride``-th one.

    Returns
    -------
    numpy.ndarray
        int64 start indices, ascending; empty when no window fits.
    """
    mask = np.asarray(mask, dtype=bool)
    if length < 1:
        raise ValueError(f"window length {length} must be at least 1")
    if mask.size < length:
        return np.empty(0, dtype=np.int64)
    inside = np.convolve(mask.astype(np.int64), np.ones(length, dtype=np.int64), "valid")
    return np.nonzero(inside == length)[0][::stride].astype(np.int64)


def anomalies(values: np.ndarray, hours: np.ndarray, climatology: np.ndarray) -> np.ndarray:
    """``values - climatology[hour]``: float32 [time, channel, lat, lon]."""
    return (values - climatology[hours]).astype(np.float32)


def anomaly_scale(anomaly: np.ndarray, train_mask: np.ndarray) -> np.ndarray:
    """Standard deviation of the training anomalies per channel: float64 [channel].

    Raises
    ------
    ValueError
        A channel has no variability in the training period.
    """
    chosen = anomaly[np.asarray(train_mask, dtype=bool)].astype(np.float64)
    scale = chosen.transpose(1, 0, 2, 3).reshape(chosen.shape[1], -1).std(axis=1)
    if not np.all(scale > 0):
        raise ValueError(f"channel anomaly scales {scale.tolist()} must be positive")
    return scale


def gather_windows(series: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``series[s : s + length]`` for every start: [len(starts), length, ...]."""
    index = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length)[None, :]
    return series[index]
