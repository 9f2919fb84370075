"""The Open-Meteo-style point API on a real committed forecast run (the real sink and reader)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from openmeteo_requests.Client import _process_response
from openmeteo_sdk.Unit import Unit
from openmeteo_sdk.Variable import Variable
from openmeteo_sdk.WeatherApiResponse import WeatherApiResponse

from pipelines.forecast.store import ForecastStore, open_forecast_store
from pipelines.forecast.zarr_sink import RunArrays
from serve.openmeteo import (
    BadRequest,
    QueryLimits,
    RunView,
    answer,
    parse_query,
    respond,
    to_flatbuffers,
    to_json,
)
from tests.helpers.models import make_linear_model

LAT = np.arange(58.0, 49.5, -1.0)  # 58 .. 50, descending (a UK box, as the shipped model)
LON = np.arange(-10.0, 2.5, 1.0)  # -10 .. 2
INITS = np.array(["2019-03-30T18:00", "2019-03-30T22:00"], "datetime64[s]").astype(np.int64)
LEADS = (1, 2, 3, 4, 5, 6)  # the latest init's valid times cross the UK's DST start (01:00Z)
LIMITS = QueryLimits(max_locations=3, max_forecast_hours=48)
NAN_AT = (1, 3, 4)  # u10 is missing at lead index 1, lat 55, lon -6


def _commit_run(root: Path, variables: tuple[str, ...], levels: tuple[int, ...] = ()) -> str:
    """Write and commit one forecast run with the project's own sink and store."""
    card = make_linear_model(
        root / "model.onnx", LAT, LON, variables=variables, levels=levels, name="uk-test"
    )
    channels = len(variables) * max(1, len(levels))
    rng = np.random.default_rng(11)
    values = rng.normal(size=(len(INITS), len(LEADS), channels, len(LAT), len(LON)))
    scale = {"t2m": (280.0, 5.0), "t": (260.0, 8.0), "msl": (101300.0, 300.0), "u10": (0, 5.0)}
    for v, name in enumerate(variables):
        mean, spread = scale[name]
        block = slice(v * max(1, len(levels)), (v + 1) * max(1, len(levels)))
        values[:, :, block] = mean + spread * values[:, :, block]
    values = values.astype(np.float32)
    if "u10" in variables:
        values[-1, NAN_AT[0], variables.index("u10"), NAN_AT[1], NAN_AT[2]] = np.nan
    url = str(root / "forecast.zarr")
    store = ForecastStore(url)
    arrays = RunArrays(store.run_url("run-1", "1"))
    model = {"name": card.name, "version": card.version, "sha256": card.sha256}
    arrays.create(card, INITS, LEADS, {"run_id": "run-1", "model": model})
    arrays.write(np.arange(len(INITS)), values, card)
    arrays.finish({"checksum": float(np.nansum(values))})
    store.publish("run-1", "1", keep_runs=3)
    return url


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    url = _commit_run(tmp_path_factory.mktemp("forecast"), ("t2m", "msl", "u10"))
    return open_forecast_store(url).load()


@pytest.fixture(scope="module")
def run(dataset: xr.Dataset) -> RunView:
    return RunView.from_dataset(dataset)


def _grid(dataset: xr.Dataset, name: str, lat: float, lon: float) -> np.ndarray:
    """The latest init's values of one grid point, straight from the store [lead]."""
    return dataset[name].isel(init_time=-1).sel(lat=lat, lon=lon).values


def _ask(run: RunView, limits: QueryLimits = LIMITS, **params: Any) -> Any:
    query = parse_query({k: str(v) for k, v in params.items()}, run, limits)
    points = answer(query, run)
    return query, points, to_json(points, query, 0.5)


def test_the_view_holds_the_newest_initial_time(dataset: xr.Dataset, run: RunView) -> None:
    assert run.run_id == "run-1"
    assert run.model_name == "uk-test"
    assert run.init_seconds == INITS[-1]
    assert run.lead_hours.tolist() == list(LEADS)
    assert set(run.fields) == {"t2m", "msl", "u10"}
    assert run.fields["t2m"].dtype == np.float32
    np.testing.assert_array_equal(run.fields["msl"], dataset.msl.isel(init_time=-1).values)


def test_bilinear_is_exact_on_grid_points(dataset: xr.Dataset, run: RunView) -> None:
    for lat, lon in [(58.0, -10.0), (53.0, -4.0), (50.0, 2.0), (57.0, 1.0)]:
        _, _, body = _ask(
            run, latitude=lat, longitude=lon, hourly="t2m,msl", temperature_unit="kelvin"
        )
        assert np.array_equal(np.float32(body["hourly"]["t2m"]), _grid(dataset, "t2m", lat, lon))
        assert np.array_equal(np.float32(body["hourly"]["msl"]), _grid(dataset, "msl", lat, lon))
        assert (body["latitude"], body["longitude"]) == (lat, lon)


def test_bilinear_between_grid_points_by_hand(dataset: xr.Dataset, run: RunView) -> None:
    # (53.25, -4.6) lies 0.75 of the way from lat 54 to 53 and 0.4 from lon -5 to -4.
    corners = {
        c: _grid(dataset, "t2m", *c).astype(np.float64)
        for c in [(54.0, -5.0), (54.0, -4.0), (53.0, -5.0), (53.0, -4.0)]
    }
    expected = (
        0.25 * 0.6 * corners[(54.0, -5.0)]
        + 0.25 * 0.4 * corners[(54.0, -4.0)]
        + 0.75 * 0.6 * corners[(53.0, -5.0)]
        + 0.75 * 0.4 * corners[(53.0, -4.0)]
    ) - 273.15
    _, _, body = _ask(run, latitude=53.25, longitude=-4.6, hourly="temperature_2m")
    np.testing.assert_allclose(body["hourly"]["temperature_2m"], expected, atol=1e-4)
    assert body["hourly_units"]["temperature_2m"] == "°C"
    assert (body["latitude"], body["longitude"]) == (53.25, -4.6)  # the point asked


def test_nearest_takes_the_grid_cell_and_reports_it(dataset: xr.Dataset, run: RunView) -> None:
    _, _, body = _ask(
        run,
        latitude=53.3,
        longitude=-4.6,
        hourly="t2m",
        cell_selection="nearest",
        temperature_unit="kelvin",
    )
    assert (body["latitude"], body["longitude"]) == (53.0, -5.0)
    assert np.array_equal(np.float32(body["hourly"]["t2m"]), _grid(dataset, "t2m", 53.0, -5.0))
    _, _, same = _ask(
        run,
        latitude=53.3,
        longitude=-4.6,
        hourly="t2m",
        interpolation="nearest",
        temperature_unit="kelvin",
    )
    assert same["hourly"] == body["hourly"]


def test_temperature_units_and_other_variables_keep_theirs(
    dataset: xr.Dataset, run: RunView
) -> None:
    kelvin = _grid(dataset, "t2m", 52.0, -1.0).astype(np.float64)
    _, _, c = _ask(run, latitude=52, longitude=-1, hourly="t2m,pressure_msl")
    _, _, f = _ask(run, latitude=52, longitude=-1, hourly="t2m", temperature_unit="fahrenheit")
    np.testing.assert_allclose(c["hourly"]["t2m"], kelvin - 273.15, atol=1e-4)
    np.testing.assert_allclose(f["hourly"]["t2m"], (kelvin - 273.15) * 1.8 + 32, atol=1e-4)
    assert f["hourly_units"]["t2m"] == "°F"
    assert c["hourly_units"]["pressure_msl"] == "Pa"  # the lexicon's unit, not converted
    assert np.array_equal(
        np.float32(c["hourly"]["pressure_msl"]), _grid(dataset, "msl", 52.0, -1.0)
    )


def test_unixtime_gives_utc_seconds(run: RunView) -> None:
    _, _, body = _ask(
        run,
        latitude=52,
        longitude=-1,
        hourly="t2m",
        timeformat="unixtime",
        timezone="Europe/London",
        forecast_hours=3,
    )
    assert body["hourly"]["time"] == [int(INITS[-1]) + 3600 * h for h in (1, 2, 3)]
    assert body["hourly_units"]["time"] == "unixtime"


def test_local_times_across_the_uk_dst_start(run: RunView) -> None:
    _, _, gmt = _ask(run, latitude=52, longitude=-1, hourly="t2m")
    assert gmt["hourly"]["time"][:3] == ["2019-03-30T23:00", "2019-03-31T00:00", "2019-03-31T01:00"]
    assert (gmt["timezone"], gmt["timezone_abbreviation"], gmt["utc_offset_seconds"]) == (
        "GMT",
        "GMT",
        0,
    )
    _, _, london = _ask(run, latitude=52, longitude=-1, hourly="t2m", timezone="europe/london")
    assert london["hourly"]["time"] == [
        "2019-03-30T23:00",
        "2019-03-31T00:00",
        "2019-03-31T02:00",  # 01:00Z is 02:00 BST
        "2019-03-31T03:00",
        "2019-03-31T04:00",
        "2019-03-31T05:00",
    ]
    assert (london["timezone"], london["timezone_abbreviation"]) == ("Europe/London", "GMT")
    assert london["utc_offset_seconds"] == 0  # the first time's offset, as Open-Meteo gives one
    _, _, york = _ask(run, latitude=52, longitude=-1, hourly="t2m", timezone="America/New_York")
    assert york["utc_offset_seconds"] == -4 * 3600
    assert york["timezone_abbreviation"] == "EDT"
    assert york["hourly"]["time"][0] == "2019-03-30T19:00"
    _, _, auto = _ask(run, latitude=52, longitude=-1, hourly="t2m", timezone="auto")
    assert auto["timezone"] == "GMT"


def test_several_locations_give_a_list(dataset: xr.Dataset, run: RunView) -> None:
    _, _, body = _ask(
        run, latitude="53,51", longitude="-4,0", hourly="t2m", temperature_unit="kelvin"
    )
    assert isinstance(body, list)
    assert [(b["latitude"], b["longitude"]) for b in body] == [(53, -4), (51, 0)]
    assert np.array_equal(np.float32(body[1]["hourly"]["t2m"]), _grid(dataset, "t2m", 51.0, 0.0))
    query = parse_query(
        {"latitude": ["53", "51"], "longitude": "-4,0", "hourly": "t2m"}, run, LIMITS
    )
    assert query.latitudes == (53.0, 51.0)


def test_the_response_carries_the_run_and_open_meteo_fields(run: RunView) -> None:
    _, _, body = _ask(
        run,
        latitude=52,
        longitude=-1,
        hourly="t2m,u10",
        model="uk-test",
        apikey="secret",
        daily="temperature_2m_max",
        forecast_days=3,
    )
    assert body["run_id"] == "run-1"
    assert (body["model"], body["model_version"]) == ("uk-test", run.model_version)
    assert body["elevation"] is None
    assert body["generationtime_ms"] == 0.5
    assert list(body["hourly"]) == ["time", "t2m", "u10"]
    assert body["hourly_units"] == {"time": "iso8601", "t2m": "°C", "u10": "m/s"}
    _, _, versioned = _ask(
        run, latitude=52, longitude=-1, hourly="t2m", model=f"uk-test:{run.model_version}"
    )
    assert versioned["hourly"] == {"time": body["hourly"]["time"], "t2m": body["hourly"]["t2m"]}


def test_a_missing_neighbour_gives_null(run: RunView) -> None:
    _, _, body = _ask(run, latitude=55.5, longitude=-6, hourly="u10")  # touches (55, -6)
    assert body["hourly"]["u10"][NAN_AT[0]] is None
    assert all(v is not None for i, v in enumerate(body["hourly"]["u10"]) if i != NAN_AT[0])


BAD = [
    ({"latitude": "91"}, "latitude", "91"),
    ({"latitude": "north"}, "latitude", "north"),
    ({"latitude": "nan"}, "latitude", "nan"),
    ({"latitude": ""}, "latitude", "missing"),
    ({"longitude": "-181"}, "longitude", "-181"),
    ({"latitude": "52,53"}, "longitude", "2 values"),
    ({"latitude": "52,53,54,55", "longitude": "0,0,0,0"}, "latitude", "at most 3"),
    ({"latitude": "45"}, "latitude", "outside the domain"),
    ({"longitude": "10"}, "longitude", "outside the domain"),
    ({"hourly": "cloud_cover"}, "hourly", "cloud_cover"),
    ({"hourly": "surface_pressure"}, "hourly", "surface_pressure"),
    ({"hourly": ""}, "hourly", "t2m (temperature_2m)"),
    ({"forecast_hours": "49"}, "forecast_hours", "at most 48"),
    ({"forecast_hours": "7"}, "forecast_hours", "1 to 6"),
    ({"forecast_hours": "-2"}, "forecast_hours", "-2"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone", "Mars/Olympus_Mons"),
    ({"timezone": ["GMT", "Europe/Paris"]}, "timezone", "once"),
    ({"temperature_unit": "rankine"}, "temperature_unit", "rankine"),
    ({"timeformat": "rfc3339"}, "timeformat", "rfc3339"),
    ({"format": "csv"}, "format", "csv"),
    ({"cell_selection": "land"}, "cell_selection", "land"),
    ({"cell_selection": "nearest", "interpolation": "bilinear"}, "interpolation", "disagree"),
    ({"model": "ecmwf_ifs025"}, "model", "ecmwf_ifs025"),
    ({"models": "uk-test:0000"}, "models", "uk-test:0000"),
]


@pytest.mark.parametrize(("params", "parameter", "shown"), BAD, ids=[b[1] for b in BAD])
def test_every_bad_parameter_is_named_with_its_value_and_fix(
    run: RunView, params: dict[str, str | list[str]], parameter: str, shown: str
) -> None:
    query: dict[str, str | list[str]] = {"latitude": "52", "longitude": "-1", "hourly": "t2m"}
    query.update(params)
    with pytest.raises(BadRequest) as caught:
        parse_query(query, run, LIMITS)
    assert caught.value.parameter == parameter
    assert parameter in caught.value.reason
    assert shown in caught.value.reason
    assert any(hint in caught.value.reason for hint in ("give", "ask", "use", "leave"))


def test_respond_answers_a_bad_request_as_open_meteo_does(run: RunView) -> None:
    reply = respond({"latitude": "95", "longitude": "0", "hourly": "t2m"}, run, LIMITS)
    assert reply.status == 400
    assert reply.body == {"error": True, "reason": reply.body["reason"]}  # type: ignore[index]
    good = respond(
        {"latitude": "52", "longitude": "0", "hourly": "t2m", "format": "flatbuffers"}, run, LIMITS
    )
    assert (good.status, good.media_type) == (200, "application/octet-stream")
    assert isinstance(good.body, bytes)


def _split(body: bytes) -> list[WeatherApiResponse]:
    """The SDK alone: 4-byte little-endian size, then one WeatherApiResponse, repeated."""
    out, pos = [], 0
    while pos < len(body):
        size = int.from_bytes(body[pos : pos + 4], "little")
        out.append(WeatherApiResponse.GetRootAs(body, pos + 4))
        pos += 4 + size
    assert pos == len(body)
    return out


def test_flatbuffers_decode_to_the_json_values(run: RunView) -> None:
    params = {
        "latitude": "55.5,53,50.2",
        "longitude": "-6,-4,1.7",
        "hourly": "t2m,msl,u10",
        "timezone": "Europe/London",
        "temperature_unit": "fahrenheit",
    }
    query = parse_query(params, run, LIMITS)
    points = answer(query, run)
    body = to_json(points, query, 1.5)
    raw = to_flatbuffers(points, query, 1.5)
    client = _process_response(response=SimpleNamespace(content=raw))  # openmeteo_requests
    assert len(client) == len(_split(raw)) == 3
    for index, (message, json) in enumerate(zip(client, body, strict=True)):
        assert message.LocationId() == index
        assert message.Latitude() == pytest.approx(json["latitude"], abs=1e-5)
        assert message.Longitude() == pytest.approx(json["longitude"], abs=1e-5)
        assert message.Timezone() == b"Europe/London"
        assert message.TimezoneAbbreviation() == b"GMT"
        assert message.UtcOffsetSeconds() == json["utc_offset_seconds"]
        assert message.GenerationTimeMilliseconds() == pytest.approx(1.5)
        assert math.isnan(message.Elevation())
        hourly = message.Hourly()
        assert (hourly.Time(), hourly.Interval()) == (int(INITS[-1]) + 3600, 3600)
        assert hourly.TimeEnd() == int(INITS[-1]) + 7 * 3600
        assert hourly.VariablesLength() == 3
        described = [
            (
                hourly.Variables(i).Variable(),
                hourly.Variables(i).Unit(),
                hourly.Variables(i).Altitude(),
            )
            for i in range(3)
        ]
        assert described == [
            (Variable.temperature, Unit.fahrenheit, 2),
            (Variable.pressure_msl, Unit.pascal, 0),
            (Variable.wind_u_component, Unit.metre_per_second, 10),
        ]
        for i, name in enumerate(("t2m", "msl", "u10")):
            values = hourly.Variables(i).ValuesAsNumpy()
            assert values.dtype == np.float32
            as_json = np.array([np.nan if v is None else v for v in json["hourly"][name]])
            np.testing.assert_array_equal(values, as_json.astype(np.float32))  # NaN == NaN
    assert np.isnan(client[0].Hourly().Variables(2).ValuesAsNumpy()[NAN_AT[0]])


def test_flatbuffers_need_evenly_spaced_times(run: RunView) -> None:
    uneven = RunView(
        run_id="r",
        model_name="m",
        model_version="1",
        init_seconds=0,
        lead_hours=np.array([1, 2, 4]),
        lat=LAT,
        lon=LON,
        fields={"t2m": np.zeros((3, len(LAT), len(LON)), np.float32)},
    )
    params = {"latitude": "52", "longitude": "0", "hourly": "t2m"}
    assert len(_ask(uneven, **params)[2]["hourly"]["time"]) == 3  # JSON is fine
    with pytest.raises(BadRequest) as caught:
        parse_query({**params, "format": "flatbuffers"}, uneven, LIMITS)
    assert caught.value.parameter == "format"


def test_levels_become_one_field_each(tmp_path: Path) -> None:
    run = RunView.from_dataset(open_forecast_store(_commit_run(tmp_path, ("t",), (850, 500))))
    assert set(run.fields) == {"t_850hPa", "t_500hPa"}
    query, points, body = _ask(
        run, latitude=52, longitude=0, hourly="temperature_850hPa,t_500hPa", format="flatbuffers"
    )
    assert body["hourly_units"]["temperature_850hPa"] == "°C"
    decoded = _split(to_flatbuffers(points, query, 0.1))[0].Hourly()
    assert [decoded.Variables(i).PressureLevel() for i in range(2)] == [850, 500]
    assert decoded.Variables(0).Variable() == Variable.temperature


def test_bilinear_wraps_at_the_dateline_on_a_global_grid() -> None:
    lon = np.arange(-180.0, 180.0, 10.0)
    field = np.zeros((1, 3, len(lon)), np.float32)
    field[0, :, -1], field[0, :, 0] = 10.0, 20.0  # 170 E and 180 W
    run = RunView(
        run_id="g",
        model_name="m",
        model_version="1",
        init_seconds=0,
        lead_hours=np.array([1]),
        lat=np.array([10.0, 0.0, -10.0]),
        lon=lon,
        fields={"t2m": field},
    )
    _, _, body = _ask(run, latitude=0, longitude=177.5, hourly="t2m", temperature_unit="kelvin")
    assert body["hourly"]["t2m"] == [17.5]
    _, _, east = _ask(run, latitude=0, longitude=180, hourly="t2m", temperature_unit="kelvin")
    assert east["hourly"]["t2m"] == [20.0]


@settings(max_examples=200, deadline=None)
@given(
    lat=st.floats(min_value=50.0, max_value=58.0),
    lon=st.floats(min_value=-10.0, max_value=2.0),
)
def test_bilinear_lies_within_its_four_neighbours(run: RunView, lat: float, lon: float) -> None:
    _, points, _ = _ask(
        run, latitude=repr(lat), longitude=repr(lon), hourly="t2m", temperature_unit="kelvin"
    )
    rows = np.where(np.abs(LAT - lat) < 1.0)[0]
    cols = np.where(np.abs(LON - lon) < 1.0)[0]
    neighbours = run.fields["t2m"][:, rows][:, :, cols].reshape(len(LEADS), -1)
    values = points[0].values["t2m"]
    assert np.all(values >= neighbours.min(axis=1))
    assert np.all(values <= neighbours.max(axis=1))
