"""Rollouts through ModelRuntime, the verifying-time rule, skill rows and the report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from pipelines.climatology import hour_of_day_climatology
from pipelines.evaluate.report import write_report
from pipelines.evaluate.rollout import initial_history, rollout_forecasts
from pipelines.evaluate.runner import evaluate_model
from pipelines.evaluate.scoring import card_scores, score_forecasts, skill_rows
from pipelines.fields import load_fields
from pipelines.models.runtime import ModelRuntime
from schemas.train_config import Split, TimeRange
from tests.helpers.models import make_linear_model, persistence_model
from tests.pipelines.evaluate.stores import SYNTHETIC_LAT, SYNTHETIC_LON, synthetic_store

HELD_OUT = Split(held_out=TimeRange(start=datetime(2020, 1, 8, tzinfo=UTC)))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synthetic_store(tmp_path_factory.mktemp("store") / "analysis.zarr"))


def test_history_before_the_first_field_is_climatology_plus_first_anomaly() -> None:
    values = np.arange(5 * 2, dtype=np.float32).reshape(5, 1, 2, 1) + 100.0
    hours = (np.arange(5) + 22) % 24  # starts at 22 h
    clim = np.arange(24, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 1))
    got = initial_history(values, hours, clim, init=1, history=4)
    anomaly = values[0] - clim[22]
    np.testing.assert_allclose(got[0], clim[20] + anomaly)  # two hours before the first
    np.testing.assert_allclose(got[1], clim[21] + anomaly)
    np.testing.assert_array_equal(got[2:], values[:2])
    np.testing.assert_array_equal(initial_history(values, hours, clim, 4, 3), values[2:5])


def test_linear_model_rollout_matches_a_numpy_rollout(store: str, tmp_path: Path) -> None:
    card = make_linear_model(
        tmp_path / "m.onnx", SYNTHETIC_LAT, SYNTHETIC_LON, history=2, a=0.75, b=0.25
    )
    runtime = ModelRuntime.load(tmp_path / "m.onnx", card, device="cpu", threads=1)
    fields = load_fields(store, ["t2m"])
    clim = hour_of_day_climatology(fields.values, fields.hours, np.ones(len(fields.times), bool))
    inits = np.array([5, 100, 101])
    got = rollout_forecasts(runtime, fields.values, fields.hours, clim, inits, [1, 3], 2)
    for n, i in enumerate(inits):
        state = list(fields.values[i - 1 : i + 1].astype(np.float64))
        steps = []
        for _ in range(3):
            nxt = 0.75 * state[-1] + 0.25 * (state[-1] + state[-2]) / 2
            steps.append(nxt)
            state = [state[-1], nxt]
        np.testing.assert_allclose(got[n, 0], steps[0], rtol=1e-5)
        np.testing.assert_allclose(got[n, 1], steps[2], rtol=1e-5)


def test_persistence_model_scores_like_persistence_on_inits_that_verify(
    store: str, tmp_path: Path
) -> None:
    card = persistence_model(tmp_path / "p.onnx", SYNTHETIC_LAT, SYNTHETIC_LON)
    runtime = ModelRuntime.load(tmp_path / "p.onnx", card, device="cpu", threads=1)
    fields = load_fields(store, ["t2m"])
    scores = evaluate_model(runtime, fields, HELD_OUT, [1, 6, 24], batch_size=7)
    # held out: 2020-01-08T00 .. 01-10T23 = 72 inits; lead L verifies for 72 - L of them
    assert scores.n_inits == (71, 66, 48)
    for metric in ("rmse", "bias", "mae", "acc"):
        np.testing.assert_allclose(
            scores.values[(metric, "model")], scores.values[(metric, "persistence")], rtol=1e-6
        )
    assert scores.period_start == datetime(2020, 1, 8, tzinfo=UTC)
    assert scores.period_end == datetime(2020, 1, 10, 23, tzinfo=UTC)
    rows = skill_rows(scores)
    assert len(rows) == 3 * 4 and {r.variable for r in rows} == {"t2m"}
    acc = [r for r in rows if r.metric == "acc"]
    assert all(r.climatology_value is None and r.model_value is not None for r in acc)
    table = card_scores(rows, {"note": 1})
    assert table["note"] == 1
    assert table["scores"]["t2m"]["rmse"]["6"]["n_inits"] == 66

    report = write_report(scores, tmp_path / "report", "persistence", ["t2m at lead 1 h: no"])
    text = report.read_text()
    assert "| 24 | 48 |" in text and "fails:" in text
    for name in ("skill_t2m.png", "error_maps_t2m.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
        assert f"({name})" in text


def test_scores_use_the_reference_formula(store: str, tmp_path: Path) -> None:
    fields = load_fields(store, ["t2m"])
    values, hours = fields.values, fields.hours
    clim = hour_of_day_climatology(values, hours, np.ones(len(values), bool))
    inits = np.array([200, 230])
    forecasts = values[inits + 1][:, None] + 1.0  # truth + 1 K at lead 1
    scores = score_forecasts(
        forecasts, values, hours, fields.times, clim, inits, [1], fields.lat, fields.lon, ["t2m"]
    )
    assert scores.get("rmse", "model", 0, 0) == pytest.approx(1.0)
    assert scores.get("bias", "model", 0, 0) == pytest.approx(1.0)
    assert scores.get("mae", "model", 0, 0) == pytest.approx(1.0)
