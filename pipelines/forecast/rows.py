"""Forecast arrays as ``forecasts`` rows: PostgreSQL binary COPY bytes and SQLite tuples.

Rows are ordered init time, lead time, channel, latitude, longitude. The binary COPY encoder
fills a packed big-endian numpy record per row (field count, then length + value per column)
with vectorised assignments, so encoding costs a memory copy, not a Python loop per row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from schemas.model_card import ModelCard

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds
_N_COLUMNS = 10


@dataclass(frozen=True)
class RowContext:
    """What every row of a run shares, and the grid its fields are on."""

    run_id: str
    model_sha256: str
    channels: tuple[tuple[str, int | None], ...]
    lat: np.ndarray  # float64 [n_lat]
    lon: np.ndarray  # float64 [n_lon]

    @classmethod
    def of(cls, run_id: str, card: ModelCard) -> RowContext:
        return cls(
            run_id=run_id,
            model_sha256=card.sha256,
            channels=tuple(card.channels),
            lat=np.asarray(card.inputs.grid.lat, dtype=np.float64),
            lon=np.asarray(card.inputs.grid.lon, dtype=np.float64),
        )

    @property
    def points(self) -> int:
        return len(self.lat) * len(self.lon)


def _copy_dtype(run_id: bytes, sha: bytes, variable: bytes, has_level: bool) -> np.dtype:
    fields: list[tuple[str, str]] = [("n", ">i2")]

    def column(name: str, dtype: str) -> None:
        fields.append((f"len_{name}", ">i4"))
        fields.append((name, dtype))

    column("run_id", f"S{len(run_id)}")
    column("sha", f"S{len(sha)}")
    column("init", ">i8")
    column("lead", ">i4")
    column("valid", ">i8")
    column("variable", f"S{len(variable)}")
    if has_level:
        column("level", ">i4")
    else:
        fields.append(("len_level", ">i4"))  # -1: NULL, no bytes follow
    column("lat", ">f8")
    column("lon", ">f8")
    column("value", ">f4")
    return np.dtype(fields)


class CopyEncoder:
    """Encodes fields of one run into PostgreSQL binary COPY tuples (no header or trailer)."""

    def __init__(self, context: RowContext) -> None:
        self.context = context
        run_id = context.run_id.encode("ascii")
        sha = context.model_sha256.encode("ascii")
        lat, lon = np.meshgrid(context.lat, context.lon, indexing="ij")
        self._records: list[np.ndarray] = []
        for variable, level in context.channels:
            name = variable.encode("ascii")
            record = np.zeros(
                context.points, dtype=_copy_dtype(run_id, sha, name, level is not None)
            )
            record["n"] = _N_COLUMNS
            for column, size in (
                ("run_id", len(run_id)),
                ("sha", len(sha)),
                ("init", 8),
                ("lead", 4),
                ("valid", 8),
                ("variable", len(name)),
                ("lat", 8),
                ("lon", 8),
                ("value", 4),
            ):
                record[f"len_{column}"] = size
            record["run_id"] = run_id
            record["sha"] = sha
            record["variable"] = name
            if level is None:
                record["len_level"] = -1
            else:
                record["len_level"] = 4
                record["level"] = level
            record["lat"] = lat.ravel()
            record["lon"] = lon.ravel()
            self._records.append(record)

    def field(self, init_s: int, lead_h: int, channel: int, values: np.ndarray) -> bytes:
        """The COPY tuples of one field (one init, lead and channel), [n_lat, n_lon] values."""
        record = self._records[channel]
        init_us = int(init_s) * 1_000_000 - _PG_EPOCH_US
        record["init"] = init_us
        record["lead"] = lead_h
        record["valid"] = init_us + int(lead_h) * 3_600_000_000
        record["value"] = values.ravel()
        return record.tobytes()

    def chunks(
        self,
        init_seconds: np.ndarray,
        lead_hours: tuple[int, ...],
        forecasts: np.ndarray,
        rows_per_chunk: int,
    ) -> Iterator[bytes]:
        """COPY tuples of ``forecasts`` [B, lead, channels, lat, lon], about
        ``rows_per_chunk`` rows at a time."""
        pending: list[bytes] = []
        rows = 0
        for b, init_s in enumerate(init_seconds):
            for k, lead_h in enumerate(lead_hours):
                for c in range(len(self.context.channels)):
                    pending.append(self.field(int(init_s), lead_h, c, forecasts[b, k, c]))
                    rows += self.context.points
                    if rows >= rows_per_chunk:
                        yield b"".join(pending)
                        pending, rows = [], 0
        if pending:
            yield b"".join(pending)


def sqlite_time(seconds: np.ndarray) -> list[str]:
    """Epoch seconds as the text SQLAlchemy's DateTime stores on SQLite (naive UTC)."""
    stamps = np.asarray(seconds, dtype=np.int64).astype("datetime64[s]").astype("datetime64[us]")
    return [s.replace("T", " ") for s in np.datetime_as_string(stamps, unit="us").tolist()]


def sqlite_rows(
    context: RowContext,
    attempt: str,
    init_s: int,
    lead_hours: tuple[int, ...],
    forecasts: np.ndarray,
) -> Iterator[tuple[object, ...]]:
    """Staging rows (attempt first) of one initial time's ``forecasts`` [lead, channels, ...]."""
    init_text = sqlite_time(np.asarray([init_s]))[0]
    valid_text = sqlite_time(int(init_s) + np.asarray(lead_hours, dtype=np.int64) * 3600)
    lat, lon = np.meshgrid(context.lat, context.lon, indexing="ij")
    lat_list, lon_list = lat.ravel().tolist(), lon.ravel().tolist()
    for k, lead_h in enumerate(lead_hours):
        for c, (variable, level) in enumerate(context.channels):
            values = forecasts[k, c].ravel().astype(np.float64)
            values_list = [None if math.isnan(v) else v for v in values.tolist()]  # NaN: NULL
            for la, lo, value in zip(lat_list, lon_list, values_list, strict=True):
                yield (
                    attempt,
                    context.run_id,
                    context.model_sha256,
                    init_text,
                    lead_h,
                    valid_text[k],
                    variable,
                    level,
                    la,
                    lo,
                    value,
                )
