"""Training samples: normalised anomalies and the windows ``(history, targets)`` cut from them.

A window is ``history + steps`` consecutive hourly fields, all inside the training period, so
no window straddles the held-out period (training data may lie before and after it).
"""

from __future__ import annotations

import numpy as np

from pipelines.evaluate.baselines import hour_of_day_climatology


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


def block_anomalies(
    values: np.ndarray,
    hours: np.ndarray,
    train_mask: np.ndarray,
    climatology: np.ndarray,
    block_hours: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Anomalies as a held-out period sees them: from a climatology that never saw them.

    The time axis is cut into blocks of ``block_hours``; version ``b`` of the anomalies is
    taken from the hour-of-day climatology of the training times outside block ``b``, so a
    window whose initial time lies in block ``b`` is trained on ``versions[b]``. Blocks whose
    complement lacks an hour of the day fall back to ``climatology``.

    Returns
    -------
    tuple
        float32 ``versions`` [blocks, time, channel, lat, lon] and int64 ``block`` [time].
    """
    train_mask = np.asarray(train_mask, dtype=bool)
    block = np.arange(len(values)) // block_hours
    versions = []
    for b in range(int(block[-1]) + 1):
        outside = train_mask & (block != b)
        covered = all(np.any(outside & (hours == h)) for h in range(24))
        table = hour_of_day_climatology(values, hours, outside) if covered else climatology
        versions.append(anomalies(values, hours, table))
    return np.stack(versions), block.astype(np.int64)
