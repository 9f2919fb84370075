"""The metrics against values worked out by hand on tiny grids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.climatology import lat_weights
from pipelines.evaluate import metrics

# lat 60 and 0: cos = 0.5 and 1, normalised to mean 1 -> 2/3 and 4/3.
LAT = np.array([60.0, 0.0])
W = lat_weights(LAT, 2)


def test_lat_weights_are_cos_lat_with_mean_one() -> None:
    np.testing.assert_allclose(W, [[2 / 3, 2 / 3], [4 / 3, 4 / 3]])
    assert W.mean() == pytest.approx(1.0)
    grid = lat_weights(np.linspace(58, 50, 33), 49)
    assert grid.shape == (33, 49) and grid.mean() == pytest.approx(1.0)
    assert grid[-1, 0] > grid[0, 0]  # the south counts more


def test_weighted_rmse_bias_mae_by_hand() -> None:
    truth = np.zeros((1, 2, 2))
    forecast = np.array([[[1.0, -1.0], [2.0, 2.0]]])
    # mean(w e^2) = (2/3 * (1 + 1) + 4/3 * (4 + 4)) / 4 = 3
    assert metrics.rmse(forecast, truth, W) == pytest.approx(math.sqrt(3.0))
    # mean(w e) = (2/3 * 0 + 4/3 * 4) / 4 = 4/3
    assert metrics.bias(forecast, truth, W) == pytest.approx(4 / 3)
    # mean(w |e|) = (2/3 * 2 + 4/3 * 4) / 4 = 5/3
    assert metrics.mae(forecast, truth, W) == pytest.approx(5 / 3)
    unweighted = np.ones((2, 2))
    assert metrics.rmse(forecast, truth, unweighted) == pytest.approx(math.sqrt(2.5))


def test_rmse_averages_over_every_init_before_the_root() -> None:
    truth = np.zeros((2, 2, 2))
    forecast = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)])
    assert metrics.rmse(forecast, truth, W) == pytest.approx(math.sqrt(5.0))  # not (1+3)/2


def test_acc_by_hand() -> None:
    clim = np.full((2, 2), 10.0)
    truth = clim + np.array([[1.0, 0.0], [0.0, 1.0]])
    forecast = clim + np.array([[1.0, 1.0], [0.0, 0.0]])
    # sum w f'o' = 2/3; sum w f'^2 = 4/3; sum w o'^2 = 2/3 + 4/3 = 2
    expected = (2 / 3) / math.sqrt(4 / 3 * 2)
    assert metrics.acc(forecast[None], truth[None], clim, W) == pytest.approx(expected)
    assert metrics.acc(truth[None], truth[None], clim, W) == pytest.approx(1.0)
    assert metrics.acc((2 * clim - truth)[None], truth[None], clim, W) == pytest.approx(-1.0)


def test_acc_is_the_mean_over_inits_and_undefined_for_climatology() -> None:
    clim = np.zeros((2, 2))
    truth = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    forecast = np.stack([truth[0], -truth[1]])
    assert metrics.acc(forecast, truth, clim, W) == pytest.approx(0.0)  # (1 + -1) / 2
    assert math.isnan(metrics.acc(np.zeros_like(truth), truth, clim, W))


def test_error_maps_per_grid_point() -> None:
    truth = np.zeros((2, 2, 2))
    forecast = np.stack([np.full((2, 2), 1.0), np.full((2, 2), -3.0)])
    np.testing.assert_allclose(metrics.rmse_map(forecast, truth), np.full((2, 2), math.sqrt(5)))
    np.testing.assert_allclose(metrics.bias_map(forecast, truth), np.full((2, 2), -1.0))
