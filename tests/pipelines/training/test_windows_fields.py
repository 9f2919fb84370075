"""Reading the store, period masks and training windows (numpy only, no torch)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipelines.climatology import hour_of_day_climatology
from pipelines.errors import SchemaError
from pipelines.fields import load_fields, period_mask, split_masks
from pipelines.training.windows import (
    AnomalyWindows,
    anomalies,
    anomaly_scale,
    block_climatologies,
    window_starts,
)
from schemas.train_config import Split, TimeRange
from tests.pipelines.evaluate.stores import synthetic_store

TIMES = np.arange("2020-01-01T00", "2020-01-03T00", dtype="datetime64[h]").astype("datetime64[ns]")


def _at(day: int, hour: int = 0) -> datetime:
    return datetime(2020, 1, day, hour, tzinfo=UTC)


def test_periods_are_half_open_and_open_ended() -> None:
    mask = period_mask(TIMES, [TimeRange(start=_at(1, 6), end=_at(1, 9))])
    assert np.nonzero(mask)[0].tolist() == [6, 7, 8]
    assert period_mask(TIMES, [TimeRange(start=_at(2, 22))]).sum() == 2
    assert period_mask(TIMES, [TimeRange(end=_at(1, 2))]).sum() == 2


def test_default_training_is_everything_outside_the_held_out_period() -> None:
    train, held = split_masks(TIMES, TimeRange(start=_at(1, 10), end=_at(1, 20)), None)
    assert held.sum() == 10 and train.sum() == 38 and not (train & held).any()
    train, _ = split_masks(TIMES, TimeRange(start=_at(2)), [TimeRange(end=_at(1, 12))])
    assert train.sum() == 12
    with pytest.raises(SchemaError, match="held-out period"):
        split_masks(TIMES, TimeRange(start=_at(5)), None)


def test_a_training_period_overlapping_the_held_out_one_is_refused() -> None:
    with pytest.raises(ValueError, match="overlaps held_out"):
        Split.model_validate(
            {
                "held_out": {"start": "2020-01-02T00:00:00Z", "end": "2020-01-03T00:00:00Z"},
                "train": [{"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T01:00:00Z"}],
            }
        )
    with pytest.raises(ValueError, match="time zone"):
        TimeRange.model_validate({"start": "2020-01-02T00:00:00"})


def test_windows_never_cross_a_gap_in_the_training_mask() -> None:
    mask = np.ones(20, dtype=bool)
    mask[8:10] = False  # held out
    assert window_starts(mask, 5).tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 14, 15]
    assert window_starts(mask, 5, stride=3).tolist() == [0, 3, 12, 15]
    assert window_starts(mask, 30).size == 0


def test_anomaly_scale_is_per_channel_over_training_times() -> None:
    rng = np.random.default_rng(0)
    anomaly = np.stack([rng.normal(0, 1, (50, 3, 3)), rng.normal(0, 5, (50, 3, 3))], axis=1)
    mask = np.ones(50, bool)
    mask[:10] = False
    anomaly[:10] = 1000.0  # outside training: ignored
    scale = anomaly_scale(anomaly, mask)
    assert scale.shape == (2,) and 0.7 < scale[0] < 1.3 and 4 < scale[1] < 6


def test_block_climatologies_never_saw_their_block() -> None:
    rng = np.random.default_rng(2)
    hours = np.arange(96) % 24
    values = rng.normal(280, 1, (96, 1, 2, 3)) + np.arange(96)[:, None, None, None] * 0.1
    train = np.ones(96, dtype=bool)
    train[84:] = False  # held out: in no climatology
    full = hour_of_day_climatology(values, hours, train)
    tables, block = block_climatologies(values, hours, train, full, block_hours=24)
    assert tables.shape == (4, 24, 1, 2, 3) and block.tolist() == [t // 24 for t in range(96)]
    outside_day_1 = train & (block != 1)
    expected = hour_of_day_climatology(values, hours, outside_day_1)
    np.testing.assert_array_equal(tables[1], expected)
    single = block_climatologies(values[:24], hours[:24], train[:24], full, block_hours=24)[0]
    np.testing.assert_array_equal(single[0], full)  # no other day: the full climatology


def test_windows_take_their_initial_time_s_block_climatology() -> None:
    rng = np.random.default_rng(4)
    hours = np.arange(96) % 24
    values = (rng.normal(280, 1, (96, 1, 2, 3)) + np.arange(96)[:, None, None, None] * 0.1).astype(
        np.float32
    )
    train = np.ones(96, dtype=bool)
    full = hour_of_day_climatology(values, hours, train)
    tables, block = block_climatologies(values, hours, train, full, block_hours=24)
    scale = np.array([2.0])
    windows = AnomalyWindows(values, hours, tables, block, scale, history=6)
    cut = windows.cut(np.array([0, 20, 40]), 10)
    assert cut.shape == (3, 10, 1, 2, 3) and cut.dtype == np.float32
    # start 20: initial time 25 lies in day 1, so the whole window uses day 1's table
    np.testing.assert_allclose(cut[1], (values[20:30] - tables[1][hours[20:30]]) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(cut[0], (values[0:10] - tables[0][hours[0:10]]) / 2.0, rtol=1e-6)
    # the warming trend: day 0's anomalies from the other days' climatology are biased cold
    assert cut[0].mean() < anomalies(values[0:10], hours[0:10], full).mean() / 2.0 < 0
    whole = AnomalyWindows(values, hours, full[None], np.zeros_like(hours), scale, history=6)
    np.testing.assert_allclose(
        whole.cut(np.array([40]), 10)[0], anomalies(values[40:50], hours[40:50], full) / 2.0
    )


def test_load_fields_reads_channels_and_refuses_gaps(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "a.zarr", hours=48)
    fields = load_fields(str(store), ["t2m"])
    assert fields.values.shape == (48, 1, 7, 9) and fields.channel_names == ("t2m",)
    assert fields.hours[:3].tolist() == [0, 1, 2]
    with pytest.raises(SchemaError, match="'msl' is not in the analysis store"):
        load_fields(str(store), ["msl"])
    gappy = xr.open_zarr(store).load().isel(time=[0, 1, 3])
    gappy.to_zarr(tmp_path / "gap.zarr", zarr_format=2, consolidated=True)
    with pytest.raises(SchemaError, match="contiguous hourly"):
        load_fields(str(tmp_path / "gap.zarr"), ["t2m"])
