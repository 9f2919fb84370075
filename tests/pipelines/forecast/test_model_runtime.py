"""The model contract: cards, the ONNX handshake, devices, rollout, and the store handshake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import xarray as xr
from pydantic import ValidationError

from pipelines.analysis_store import AnalysisStore
from pipelines.errors import ClimateError, ModelError, SchemaError
from pipelines.models.artefacts import file_sha256, load_card
from pipelines.models.compatibility import check_dataset
from pipelines.models.runtime import ModelRuntime
from schemas.model_card import ModelCard, card_path_for
from tests.helpers.models import make_linear_model, persistence_model
from tests.pipelines.forecast.helpers import make_model, make_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store") / "analysis.zarr"


@pytest.fixture(scope="module")
def dataset(store_path: Path) -> xr.Dataset:
    return make_store(store_path, times=30)


def test_card_round_trips_and_names_channels(tmp_path: Path, dataset: xr.Dataset) -> None:
    path, card = make_model(tmp_path, dataset, history=3)
    again = load_card(card_path_for(path))
    assert again == card
    assert card.sha256 == file_sha256(path)
    assert card.channels == [("t2m", None), ("msl", None)]
    inputs = card.inputs.model_copy(update={"levels": [500, 850]})
    levels = card.model_copy(update={"inputs": inputs})
    assert levels.channel_names == ["t2m@500", "t2m@850", "msl@500", "msl@850"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": {"grid": {"lat": [0.0, 1.0]}}}, "descending"),
        ({"inputs": {"grid": {"lon": [0.0, 200.0]}}}, "[-180, 180)"),
        ({"inputs": {"variables": ["nope"]}}, "unknown variable"),
        ({"inputs": {"history": 0}}, "greater than or equal to 1"),
        ({"outputs": {"variables": ["t2m"]}}, "must equal inputs.variables"),
        ({"sha256": "xyz"}, "pattern"),
        ({"created_at": "2025-01-01T00:00:00"}, "time zone"),
    ],
)
def test_bad_cards_are_refused(
    tmp_path: Path, dataset: xr.Dataset, change: dict, message: str
) -> None:
    _, card = make_model(tmp_path, dataset)
    data = card.model_dump(mode="json")
    for key, value in change.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if isinstance(sub_value, dict):
                    data[key][sub].update(sub_value)
                else:
                    data[key][sub] = sub_value
        else:
            data[key] = value
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace(")", r"\)")):
        ModelCard.model_validate(data)


def test_rollout_matches_the_linear_recurrence(tmp_path: Path, dataset: xr.Dataset) -> None:
    rng = np.random.default_rng(1)
    clim = rng.normal(0, 1, (24, 1, dataset.sizes["lat"], dataset.sizes["lon"])).astype("float32")
    path = tmp_path / "m.onnx"
    card = make_linear_model(
        path, dataset.lat.values, dataset.lon.values, history=3, a=0.6, b=0.4, clim=clim
    )
    runtime = ModelRuntime.load(path, card, "cpu", threads=1)
    assert runtime.device == "cpu"
    history = rng.normal(280, 5, (2, 3, 1, dataset.sizes["lat"], dataset.sizes["lon"]))
    history = history.astype("float32")
    init_hours = np.array([22, 5])
    out = runtime.rollout(history, init_hours, steps=4)
    state = history.astype("float64")
    for k in range(4):
        hours = (init_hours + k + 1) % 24
        expected = 0.6 * state[:, -1] + 0.4 * state.mean(axis=1) + clim[hours]
        np.testing.assert_allclose(out[:, k], expected, rtol=1e-5)
        state = np.concatenate([state[:, 1:], expected[:, None]], axis=1)
    kept = runtime.rollout(history, init_hours, steps=4, keep=(2, 4))
    np.testing.assert_array_equal(kept, out[:, [1, 3]])


def test_persistence_model_copies_the_last_field(tmp_path: Path, dataset: xr.Dataset) -> None:
    card = persistence_model(tmp_path / "p.onnx", dataset.lat.values, dataset.lon.values)
    runtime = ModelRuntime.load(tmp_path / "p.onnx", card, "cpu")
    field = dataset.t2m.values[:1][None, :, None]
    out = runtime.rollout(field, np.array([0]), steps=3)
    np.testing.assert_array_equal(out[0, 2], field[0, 0])


def test_hash_mismatch_names_both_hashes(tmp_path: Path, dataset: xr.Dataset) -> None:
    path, card = make_model(tmp_path, dataset)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match=f"{file_sha256(path)}.*{card.sha256}"):
        ModelRuntime.load(path, card, "cpu")


def test_corrupt_file_is_a_model_error(tmp_path: Path, dataset: xr.Dataset) -> None:
    _, card = make_model(tmp_path, dataset)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError, match="corrupt"):
        ModelRuntime.load(bad, card.model_copy(update={"sha256": file_sha256(bad)}), "cpu")


def test_graph_not_matching_its_card_is_refused(tmp_path: Path, dataset: xr.Dataset) -> None:
    path, card = make_model(tmp_path, dataset, history=2)
    wrong = card.model_copy(update={"inputs": card.inputs.model_copy(update={"history": 3})})
    with pytest.raises(ModelError, match=r"found input fields .*\[.*2, 2, 9, 12\].*expected"):
        ModelRuntime.load(path, wrong, "cpu")
    renamed = card.model_copy(
        update={"tensors": card.tensors.model_copy(update={"output": "forecast"})}
    )
    with pytest.raises(ModelError, match="outputs \\['next'\\]"):
        ModelRuntime.load(path, renamed, "cpu")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_cuda_without_cuda_fails_at_once(tmp_path: Path, dataset: xr.Dataset) -> None:
    path, card = make_model(tmp_path, dataset)
    with pytest.raises(ModelError, match=r"no CUDAExecutionProvider.*device: cpu"):
        ModelRuntime.load(path, card, "cuda")
    with pytest.raises(ModelError, match=r"resolve_device"):
        ModelRuntime.load(path, card, "auto")  # type: ignore[arg-type]


def test_store_handshake(tmp_path: Path, dataset: xr.Dataset, store_path: Path) -> None:
    _, card = make_model(tmp_path, dataset)
    check_dataset(card, dataset)  # same grid and variables: passes
    check_dataset(card, AnalysisStore(str(store_path)).state().layout)
    inputs = card.inputs
    missing = card.model_copy(
        update={"inputs": inputs.model_copy(update={"variables": ["t2m", "u10"]})}
    )
    with pytest.raises(SchemaError, match=r"\['u10'\] missing .*ingest them"):
        check_dataset(missing, dataset)
    shifted = inputs.grid.model_copy(update={"lon": [v - 0.5 for v in inputs.grid.lon]})
    moved = card.model_copy(update={"inputs": inputs.model_copy(update={"grid": shifted})})
    with pytest.raises(SchemaError, match=r"grid 9x12 .* differs .*regrid"):
        check_dataset(moved, dataset)
    levels = card.model_copy(update={"inputs": inputs.model_copy(update={"levels": [500]})})
    with pytest.raises(ClimateError, match=r"level\(s\) \[500\] missing"):
        check_dataset(levels, dataset)
