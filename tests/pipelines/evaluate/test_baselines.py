"""Baselines: climatology from the training period only; the reference scores on the sample."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from pipelines.climatology import hour_of_day_climatology, lat_weights
from pipelines.errors import SchemaError
from pipelines.evaluate.baselines import climatology_forecast, persistence_forecast
from pipelines.evaluate.metrics import rmse
from pipelines.fields import load_fields, split_masks
from schemas.train_config import TimeRange
from tests.pipelines.evaluate.stores import sample_store


def _series(days: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(280.0, 3.0, size=(24 * days, 1, 2, 3)).astype(np.float32)
    return values, np.arange(24 * days) % 24


def test_climatology_is_the_hourly_mean_of_the_training_times() -> None:
    values, hours = _series()
    train = np.arange(len(values)) < 48
    clim = hour_of_day_climatology(values, hours, train)
    assert clim.shape == (24, 1, 2, 3) and clim.dtype == np.float32
    np.testing.assert_allclose(clim[5], (values[5] + values[29]) / 2, rtol=1e-6)


def test_changing_held_out_data_does_not_change_the_climatology() -> None:
    values, hours = _series()
    train = np.arange(len(values)) < 48
    before = hour_of_day_climatology(values, hours, train)
    changed = values.copy()
    changed[48:] += 50.0
    np.testing.assert_array_equal(hour_of_day_climatology(changed, hours, train), before)
    changed[0] += 50.0  # a training field: it must matter
    assert not np.array_equal(hour_of_day_climatology(changed, hours, train), before)


def test_a_training_period_without_some_hour_is_refused() -> None:
    values, hours = _series()
    with pytest.raises(SchemaError, match=r"hour\(s\) \[12"):
        hour_of_day_climatology(values, hours, np.arange(len(values)) < 12)


def test_baseline_forecasts_pick_the_init_field_and_the_verifying_hour() -> None:
    values, hours = _series()
    clim = hour_of_day_climatology(values, hours, np.ones(len(values), bool))
    inits = np.array([0, 30])
    np.testing.assert_array_equal(persistence_forecast(values, inits, 6), values[inits])
    np.testing.assert_array_equal(climatology_forecast(clim, hours, inits, 20), clim[[20, 2]])


REFERENCE = {  # lead: (persistence, climatology), data/README.md
    1: (0.578, 1.804),
    3: (1.568, 1.813),
    6: (2.720, 1.826),
    12: (3.694, 1.851),
    24: (1.538, 1.889),
}


def test_baselines_reproduce_the_reference_table_on_the_sample(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    store = sample_store(tmp_path_factory.mktemp("sample"))
    fields = load_fields(str(store), ["t2m"])
    held_out = TimeRange(start=datetime(2019, 3, 25, tzinfo=UTC))
    train, held = split_masks(fields.times, held_out, None)
    hours = fields.hours
    clim = hour_of_day_climatology(fields.values, hours, train)
    weights = lat_weights(fields.lat, len(fields.lon))
    inits = np.nonzero(held)[0]
    for lead, (pers, climo) in REFERENCE.items():
        ok = inits[inits + lead < len(fields.times)]
        truth = fields.values[ok + lead, 0]
        p = rmse(persistence_forecast(fields.values, ok, lead)[:, 0], truth, weights)
        c = rmse(climatology_forecast(clim, hours, ok, lead)[:, 0], truth, weights)
        assert round(p, 3) == pers and round(c, 3) == climo, lead
