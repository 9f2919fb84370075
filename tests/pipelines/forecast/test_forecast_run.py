"""End to end on a real local Ray: Zarr and table equal a bare loop; bad inputs fail before
any compute; re-runs replace; a failing run leaves nothing visible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from sqlalchemy import Engine

from pipelines.errors import ClimateError, ConfigError, ModelError, SchemaError, StoreError
from pipelines.forecast.runner import prepare_forecast, run_forecast
from pipelines.forecast.store import open_forecast_store
from pipelines.ledger import RunLedger
from pipelines.models.runtime import cuda_available
from schemas.forecast_config import ForecastConfig
from schemas.settings import Settings
from tests.pipelines.forecast.helpers import (
    bare_forecast,
    forecast_config,
    make_model,
    make_store,
    run_rows,
    staging_leftovers,
    table_fingerprint,
)

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xr.Dataset]:
    path = tmp_path_factory.mktemp("analysis") / "analysis.zarr"
    return path, make_store(path)


def _settings(engine: Engine) -> Settings:
    return Settings(database_url=engine.url.render_as_string(hide_password=False))


def test_forecast_equals_a_bare_loop_and_reruns_replace(
    tmp_path: Path, analysis: tuple[Path, xr.Dataset], engine: Engine
) -> None:
    store, dataset = analysis
    model, card = make_model(tmp_path, dataset)
    out = tmp_path / "forecast.zarr"
    config = forecast_config(store, model, out, run_id="e2e")
    summary = run_forecast(config, _settings(engine), engine)

    inits = np.arange(6, 31, 6) * 3600 + 1_577_836_800
    leads = [3, 6, 9, 12]
    expected = bare_forecast(model, card, dataset, inits, leads)
    result = open_forecast_store(str(out))
    assert result.attrs["status"] == "complete"
    assert result.attrs["model"]["sha256"] == card.sha256
    assert list(result.t2m.dims) == ["init_time", "lead_time", "lat", "lon"]
    for c, name in enumerate(card.inputs.variables):
        np.testing.assert_array_equal(result[name].values, expected[:, :, c])
    valid = result.valid_time.values
    assert valid[1, 2] == result.init_time.values[1] + np.timedelta64(9, "h")

    assert summary.status == "succeeded"
    assert summary.fields == 5 * 4 * 2
    assert summary.rows == expected.size == summary.values
    count, total = run_rows(engine, "e2e")
    assert count == expected.size
    assert total == pytest.approx(float(expected.sum(dtype=np.float64)), rel=1e-9)
    record = RunLedger(engine).get("e2e")
    assert record is not None and record.kind == "forecast" and record.status == "succeeded"
    assert record.summary is not None and record.summary["model"]["sha256"] == card.sha256
    assert record.summary["analysis"] == str(store)

    before = table_fingerprint(engine, "e2e")
    again = run_forecast(config.model_copy(update={"batch_size": 1}), _settings(engine), engine)
    assert again.rows == summary.rows
    assert table_fingerprint(engine, "e2e") == before
    assert staging_leftovers(engine) == 0


def test_latest_and_list_init_times(tmp_path: Path, analysis: tuple[Path, xr.Dataset]) -> None:
    store, dataset = analysis
    model, _ = make_model(tmp_path, dataset)
    latest = forecast_config(
        store,
        model,
        tmp_path / "f.zarr",
        init_times={"kind": "latest", "count": 3, "step_hours": 2},
    )
    prepared = prepare_forecast(latest, Settings())
    last = int(dataset.time.values[-1].astype("datetime64[s]").astype("int64"))
    assert prepared.plan.init_seconds.tolist() == [last - 4 * 3600, last - 7200, last]
    listed = forecast_config(
        store,
        model,
        tmp_path / "f.zarr",
        init_times={"kind": "list", "times": ["2020-01-02T00:00Z", "2020-01-01T03:00Z"]},
        lead_times=[12, 1],
    )
    plan = prepare_forecast(listed, Settings()).plan
    assert plan.init_seconds.tolist() == [1_577_847_600, 1_577_923_200]
    assert plan.lead_hours == (1, 12) and plan.steps == 12


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            {"init_times": {"kind": "list", "times": ["2020-01-01T00:00Z"]}},
            SchemaError,
            r"1 input time\(s\) missing .*2019-12-31T23:00:00Z",
        ),
        (
            {"init_times": {"kind": "list", "times": ["2021-06-01T00:00Z"]}},
            SchemaError,
            "missing from the analysis store",
        ),
        ({"lead_times": [6, 300]}, ConfigError, r"\[300\] h are beyond 240 h"),
        ({"device": "cuda"}, ModelError, "cuda"),
    ],
)
def test_bad_inputs_fail_before_any_compute(
    tmp_path: Path,
    analysis: tuple[Path, xr.Dataset],
    overrides: dict,
    error: type[ClimateError],
    message: str,
) -> None:
    if overrides.get("device") == "cuda" and cuda_available():
        pytest.skip("CUDA is available here")
    store, dataset = analysis
    model, _ = make_model(tmp_path, dataset)
    out = tmp_path / "forecast.zarr"
    with pytest.raises(error, match=message):
        prepare_forecast(forecast_config(store, model, out, **overrides), Settings())
    assert not out.exists()


def test_lead_not_a_multiple_of_the_time_step(
    tmp_path: Path, analysis: tuple[Path, xr.Dataset]
) -> None:
    store, dataset = analysis
    model, _ = make_model(tmp_path, dataset, time_step_hours=6, max_lead_hours=24)
    config = forecast_config(store, model, tmp_path / "f.zarr", lead_times=[6, 9])
    with pytest.raises(ConfigError, match=r"\[9\] h are not multiples of .* 6 h"):
        prepare_forecast(config, Settings())
    beyond = forecast_config(store, model, tmp_path / "f.zarr", lead_times=[6, 30])
    with pytest.raises(ConfigError, match="model card's max_lead_hours"):
        prepare_forecast(beyond, Settings())


def test_model_not_matching_the_store(tmp_path: Path, analysis: tuple[Path, xr.Dataset]) -> None:
    store, dataset = analysis
    other = make_store(tmp_path / "other.zarr", times=30, variables=("t2m",), n_lat=5, n_lon=8)
    model, _ = make_model(tmp_path, other)
    with pytest.raises(SchemaError, match=r"grid 9x12 .* differs from the model's 5x8"):
        prepare_forecast(forecast_config(store, model, tmp_path / "f.zarr"), Settings())
    (tmp_path / "u10").mkdir()
    model, _ = make_model(tmp_path / "u10", dataset, variables=("u10", "t2m"))
    with pytest.raises(SchemaError, match=r"\['u10'\] missing .*ingest them"):
        prepare_forecast(forecast_config(store, model, tmp_path / "f.zarr"), Settings())


def test_a_failing_run_leaves_nothing_visible(
    tmp_path: Path, analysis: tuple[Path, xr.Dataset], engine: Engine
) -> None:
    """The second time chunk of the analysis is corrupt: batches of the first day stage rows,
    then a worker fails reading; the run fails, and no row of it is visible."""
    _, dataset = analysis
    store = tmp_path / "analysis.zarr"
    make_store(store)
    (store / "t2m" / "1.0.0").write_bytes(b"not a blosc chunk")
    model, _ = make_model(tmp_path, dataset)
    config = forecast_config(store, model, tmp_path / "f.zarr", run_id="doomed", batch_size=1)
    with pytest.raises(StoreError, match=r"cannot read the inputs .*re-ingest"):
        run_forecast(config, _settings(engine), engine)
    assert run_rows(engine, "doomed") == (0, 0.0)
    assert staging_leftovers(engine) == 0
    record = RunLedger(engine).get("doomed")
    assert record is not None and record.status == "failed" and record.error


def test_promoted_model_from_the_registry(
    tmp_path: Path, analysis: tuple[Path, xr.Dataset], engine: Engine
) -> None:
    """``model: {name, version: promoted}`` fetches the promoted version, verified, and runs it."""
    from pipelines.models.registry import ModelRegistry
    from tests.pipelines.registry_helpers import record_evaluation

    store, dataset = analysis
    model, card = make_model(tmp_path, dataset)
    registry = ModelRegistry(engine, str(tmp_path / "registry"))
    registry.register(model)
    record_evaluation(engine, card)  # promotion needs a succeeded evaluation that passes
    registry.promote(card.name, card.version)
    settings = _settings(engine).model_copy(
        update={"model_registry_url": str(tmp_path / "registry")}
    )
    data = forecast_config(store, model, tmp_path / "f.zarr", run_id="from-registry").model_dump()
    data["model"] = {"kind": "registry", "name": card.name, "version": "promoted"}
    config = ForecastConfig.model_validate(data)
    summary = run_forecast(config, settings, engine)
    assert summary.status == "succeeded"
    assert open_forecast_store(str(tmp_path / "f.zarr")).attrs["model"]["sha256"] == card.sha256
    registry.retire(card.name, card.version, force=True)
    with pytest.raises(ModelError, match="promoted"):
        prepare_forecast(config, settings)
