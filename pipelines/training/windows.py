"""Training samples: normalised anomalies and the windows ``(history, targets)`` cut from them.

A window is ``history + steps`` consecutive hourly fields, all inside the training period, so
no window straddles the held-out period (training data may lie before and after it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pipelines.climatology import hour_of_day_climatology


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


class AnomalyWindows:
    """Normalised anomaly windows, each from the climatology table of its initial time's block.

    A window starting at ``s`` holds times ``s .. s + length - 1``; its initial time is
    ``s + history - 1``, whose block picks the table. ``tables`` [blocks, 24, C, lat, lon] and
    ``block`` [time] come from :func:`block_climatologies` (or are one climatology
    ``[None]`` with every block 0). Windows are computed when cut, so memory holds the fields
    and the tables, never an anomaly series per block.
    """

    def __init__(
        self,
        values: np.ndarray,
        hours: np.ndarray,
        tables: np.ndarray,
        block: np.ndarray,
        scale: np.ndarray,
        history: int,
    ) -> None:
        self.values, self.hours, self.tables, self.block = values, hours, tables, block
        self.scale = np.asarray(scale, dtype=np.float64)[:, None, None]
        self.history = history

    def cut(self, starts: npt.ArrayLike, length: int) -> np.ndarray:
        """float32 [len(starts), length, C, lat, lon]: ``(anomaly / scale)`` of each window."""
        first = np.asarray(starts, dtype=np.int64)
        index = first[:, None] + np.arange(length)[None, :]
        table = self.block[first + self.history - 1][:, None]
        raw = (self.values[index] - self.tables[table, self.hours[index]]).astype(np.float32)
        return (raw / self.scale).astype(np.float32)


def block_climatologies(
    values: np.ndarray,
    hours: np.ndarray,
    train_mask: np.ndarray,
    climatology: np.ndarray,
    block_hours: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Climatologies as a held-out period sees them: from training times outside its block.

    The time axis is cut into blocks of ``block_hours``; table ``b`` is the hour-of-day
    climatology of the training times outside block ``b``, so a window whose initial time lies
    in block ``b`` is trained on the anomalies ``values - tables[b][hour]`` (see
    :func:`anomalies`), which no training time of its own block shaped. Blocks whose complement
    lacks an hour of the day fall back to ``climatology``. One table per block, not one copy
    of the anomaly series per block: memory grows with the blocks times 24 fields.

    Returns
    -------
    tuple
        float32 ``tables`` [blocks, 24, channel, lat, lon] and int64 ``block`` [time].
    """
    train_mask = np.asarray(train_mask, dtype=bool)
    block = np.arange(len(values)) // block_hours
    tables = []
    for b in range(int(block[-1]) + 1):
        outside = train_mask & (block != b)
        covered = all(np.any(outside & (hours == h)) for h in range(24))
        tables.append(hour_of_day_climatology(values, hours, outside) if covered else climatology)
    return np.stack(tables).astype(np.float32), block.astype(np.int64)
