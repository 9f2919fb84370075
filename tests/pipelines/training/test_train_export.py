"""A tiny training run in seconds: seeded, exported to ONNX, equal under ONNX Runtime."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (PyTorch)")

from pipelines.errors import ModelError  # noqa: E402
from pipelines.fields import Fields, load_fields, split_masks  # noqa: E402
from pipelines.models.artefacts import file_sha256  # noqa: E402
from pipelines.models.runtime import ModelRuntime  # noqa: E402
from pipelines.training.export import check_equivalence  # noqa: E402
from pipelines.training.model import AnomalyCore, RawFieldModel  # noqa: E402
from pipelines.training.train import train_model  # noqa: E402
from pipelines.training_run import run_training  # noqa: E402
from schemas.train_config import ModelDesign, Schedule, TimeRange, TrainConfig  # noqa: E402
from tests.pipelines.evaluate.stores import synthetic_store  # noqa: E402

TINY_DESIGN = ModelDesign(history=6, lags=[0, 1, 5], mean_window=6, hidden=4, layers=1)
TINY_SCHEDULE = Schedule(epochs=3, rollout_steps=3, stride=4, batch_size=16, learning_rate=1e-2)
HELD_OUT = TimeRange(start=datetime(2020, 1, 8, tzinfo=UTC))
# float32 graph vs float32 torch on ~270 K fields: differences of a few ulp (3e-5 K)
TOLERANCE_K = 1e-4


@pytest.fixture(scope="module")
def fields(tmp_path_factory: pytest.TempPathFactory) -> Fields:
    store = synthetic_store(tmp_path_factory.mktemp("store") / "analysis.zarr")
    return load_fields(str(store), ["t2m"])


def _train(fields: Fields, seed: int = 0) -> RawFieldModel:
    train_mask, _ = split_masks(fields.times, HELD_OUT, None)
    schedule = TINY_SCHEDULE.model_copy(update={"seed": seed})
    return train_model(fields, train_mask, TINY_DESIGN, schedule, report=lambda _: None).model


def test_untrained_model_is_anomaly_persistence(fields: Fields) -> None:
    clim = np.random.default_rng(0).normal(280, 2, (24, 1, 7, 9)).astype(np.float32)
    core = AnomalyCore(TINY_DESIGN, 1, fields.lat, fields.lon)
    model = RawFieldModel(core, clim, np.array([2.0]))
    x = torch.as_tensor(fields.values[10:16][None])
    hour = torch.tensor([16 % 24])
    with torch.no_grad():
        y = model(x, hour).numpy()
    expected = fields.values[15] - clim[15] + clim[16]
    np.testing.assert_allclose(y[0], expected, rtol=1e-6)


def test_damping_shrinks_the_next_anomaly_towards_the_climatology(fields: Fields) -> None:
    clim = np.random.default_rng(0).normal(280, 2, (24, 1, 7, 9)).astype(np.float32)
    core = AnomalyCore(TINY_DESIGN, 1, fields.lat, fields.lon)  # untrained: persistence
    model = RawFieldModel(core, clim, np.array([2.0]), damping=0.5)
    x = torch.as_tensor(fields.values[10:16][None])
    with torch.no_grad():
        y = model(x, torch.tensor([16])).numpy()
    expected = 0.5 * (fields.values[15] - clim[15]) + clim[16]
    np.testing.assert_allclose(y[0], expected, rtol=1e-6)


def test_invariant_design_feeds_the_cnn_only_departures_from_the_latest_anomaly(
    fields: Fields,
) -> None:
    design = TINY_DESIGN.model_copy(update={"invariant": True})
    core = AnomalyCore(design, 1, fields.lat, fields.lon)
    rng = np.random.default_rng(1)
    lagged = [torch.as_tensor(rng.normal(size=(2, 1, 7, 9)), dtype=torch.float32) for _ in range(3)]
    mean = torch.as_tensor(rng.normal(size=(2, 1, 7, 9)), dtype=torch.float32)
    hour = torch.tensor([3, 17])
    features = core.features(lagged, mean, hour)
    warmer = core.features([lag + 4.0 for lag in lagged], mean + 4.0, hour)
    torch.testing.assert_close(warmer, features, atol=1e-5, rtol=0)
    torch.testing.assert_close(features[:, 0], (lagged[1] - lagged[0])[:, 0])
    assert core.skip.in_channels == features.shape[1] + 1  # + the latest anomaly itself


def test_regime_terms_scale_the_anomalies_by_the_field_s_24_hour_change(fields: Fields) -> None:
    design = ModelDesign(history=25, lags=[0, 1, 24], mean_window=6, layers=0, regime=True)
    core = AnomalyCore(design, 1, fields.lat, fields.lon)
    rng = np.random.default_rng(3)
    lagged = [torch.as_tensor(rng.normal(size=(2, 1, 7, 9)), dtype=torch.float32) for _ in range(3)]
    mean = torch.as_tensor(rng.normal(size=(2, 1, 7, 9)), dtype=torch.float32)
    terms = core.regime_terms(lagged, mean)
    r = torch.tanh((lagged[0] - lagged[2]).abs().mean(dim=(2, 3), keepdim=True))
    assert len(terms) == 5  # three lags, the mean, r itself
    torch.testing.assert_close(terms[1], lagged[1] * r)
    torch.testing.assert_close(terms[-1][:, :, 3, 4], r[:, :, 0, 0])
    settled = core.regime_terms([lagged[0], lagged[1], lagged[0]], mean)
    assert all(float(term.abs().max()) == 0.0 for term in settled)  # no change: no regime term
    hour = torch.tensor([3, 17])
    assert core.skip.in_channels == core.features(lagged, mean, hour).shape[1] + len(terms)


def test_persistence_regime_scales_the_anomalies_by_their_24_hour_pattern_correlation(
    fields: Fields,
) -> None:
    design = ModelDesign(
        history=25, lags=[0, 1, 24], mean_window=6, layers=0, persistence_regime=True
    )
    core = AnomalyCore(design, 1, fields.lat, fields.lon)
    rng = np.random.default_rng(4)
    now, hour_ago = (
        torch.as_tensor(rng.normal(size=(2, 1, 7, 9)), dtype=torch.float32) for _ in range(2)
    )
    mean = torch.as_tensor(rng.normal(size=(2, 1, 7, 9)), dtype=torch.float32)
    for before, rho in ((now * 3.0, 1.0), (-now, -1.0)):
        (index,) = core.regime_indices([now, hour_ago, before])
        torch.testing.assert_close(index, torch.full((2, 1, 1, 1), rho), atol=1e-5, rtol=0)
    before = torch.as_tensor(rng.normal(size=(2, 1, 7, 9)), dtype=torch.float32)
    (index,) = core.regime_indices([now, hour_ago, before])
    dot = (now * before).sum(dim=(2, 3))
    norms = now.square().sum(dim=(2, 3)).sqrt() * before.square().sum(dim=(2, 3)).sqrt()
    torch.testing.assert_close(index[:, :, 0, 0], dot / norms)
    terms = core.regime_terms([now, hour_ago, before], mean)
    torch.testing.assert_close(terms[3], mean * index)


def test_block_climatology_trains_on_anomalies_a_held_out_block_would_see(fields: Fields) -> None:
    train_mask, _ = split_masks(fields.times, HELD_OUT, None)
    schedule = TINY_SCHEDULE.model_copy(update={"block_climatology_days": 2})
    blocked = train_model(fields, train_mask, TINY_DESIGN, schedule, lambda _: None)
    plain = _train(fields)
    np.testing.assert_array_equal(
        blocked.climatology,
        train_model(fields, train_mask, TINY_DESIGN, TINY_SCHEDULE, lambda _: None).climatology,
    )  # the exported normalisation is still the whole training period's
    differ = [
        not torch.equal(a, b)
        for a, b in zip(
            blocked.model.state_dict().values(), plain.state_dict().values(), strict=True
        )
    ]
    assert any(differ)


def test_training_is_seeded_and_reproducible(fields: Fields) -> None:
    first, again, other = _train(fields), _train(fields), _train(fields, seed=1)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    differ = [
        not torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True)
    ]
    assert any(differ)


def test_members_ship_the_mean_of_their_parameters(fields: Fields) -> None:
    train_mask, _ = split_masks(fields.times, HELD_OUT, None)
    linear = TINY_DESIGN.model_copy(update={"layers": 0})

    def trained(seed: int, members: int) -> dict[str, torch.Tensor]:
        schedule = TINY_SCHEDULE.model_copy(update={"seed": seed, "members": members})
        model = train_model(fields, train_mask, linear, schedule, lambda _: None).model
        return dict(model.named_parameters())

    first, second, ensemble = trained(0, 1), trained(1, 1), trained(0, 2)
    assert not torch.equal(first["core.skip.weight"], second["core.skip.weight"])
    for name, parameter in ensemble.items():
        torch.testing.assert_close(parameter, (first[name] + second[name]) / 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_fit_without_a_cuda_device_is_refused_with_the_fix(fields: Fields) -> None:
    train_mask, _ = split_masks(fields.times, HELD_OUT, None)
    schedule = TINY_SCHEDULE.model_copy(update={"device": "cuda"})
    with pytest.raises(ValueError, match=r"sees no CUDA device: set schedule\.device=cpu"):
        train_model(fields, train_mask, TINY_DESIGN, schedule, lambda _: None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_fit_agrees_with_the_cpu_fit(fields: Fields) -> None:
    train_mask, _ = split_masks(fields.times, HELD_OUT, None)
    cuda = TINY_SCHEDULE.model_copy(update={"device": "cuda"})
    on_gpu = train_model(fields, train_mask, TINY_DESIGN, cuda, lambda _: None).model
    on_cpu = _train(fields)
    for (name, a), (_, b) in zip(
        on_gpu.state_dict().items(), on_cpu.state_dict().items(), strict=True
    ):
        assert a.device.type == "cpu", name  # exported from the CPU
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_training_never_sees_the_held_out_period(fields: Fields) -> None:
    _, held = split_masks(fields.times, HELD_OUT, None)
    changed = fields.values.copy()
    changed[held] += 25.0
    other = Fields(changed, fields.times, fields.lat, fields.lon, fields.channel_names)
    for a, b in zip(
        _train(fields).state_dict().values(), _train(other).state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_training_improves_on_the_untrained_model(fields: Fields) -> None:
    train_mask, _ = split_masks(fields.times, HELD_OUT, None)
    trained = train_model(fields, train_mask, TINY_DESIGN, TINY_SCHEDULE, lambda _: None)
    assert trained.losses[-1] < trained.losses[0]
    assert trained.climatology.shape == (24, 1, 7, 9) and trained.scale.shape == (1,)


def _tiny_config(out: Path, design: ModelDesign = TINY_DESIGN) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "analysis": {"url": "unused"},
            "split": {"held_out": HELD_OUT.model_dump()},
            "design": design.model_dump(),
            "schedule": TINY_SCHEDULE.model_dump(),
            "output": {"dir": str(out), "name": "tiny", "version": "t1"},
            "lead_hours": [1, 2, 3],
        }
    )


def test_export_runs_under_onnx_runtime_like_torch(fields: Fields, tmp_path: Path) -> None:
    config = _tiny_config(tmp_path / "model")
    result = run_training(config, fields, report=lambda _: None)
    card = result.card
    assert result.onnx_path.exists() and result.card_path.exists()
    assert card.sha256 == file_sha256(result.onnx_path) and card.version == "t1"
    assert card.inputs.history == 6 and card.channel_names == ["t2m"]
    assert card.training["held_out"] == [["2020-01-08T00:00:00Z", "2020-01-10T23:00:00Z"]]
    assert set(card.scores["scores"]["t2m"]) == {"rmse", "bias", "mae", "acc"}
    assert result.max_onnx_difference <= TOLERANCE_K

    runtime = ModelRuntime.load(result.onnx_path, card, device="cpu", threads=1)
    batch = np.stack([fields.values[s : s + 6] for s in (0, 50, 200, 230)])
    hours = (fields.hours[[5, 55, 205, 235]] + 1) % 24
    with torch.no_grad():
        expected = result.trained.model(torch.as_tensor(batch), torch.as_tensor(hours)).numpy()
    np.testing.assert_allclose(runtime.step(batch, hours), expected, atol=TOLERANCE_K, rtol=0)
    assert check_equivalence(result.trained.model, runtime, batch, hours, TOLERANCE_K) < TOLERANCE_K

    other = _train(fields, seed=5)  # a different model must fail the equivalence check
    with pytest.raises(ModelError, match="differs from the trained torch model"):
        check_equivalence(other, runtime, batch, hours, TOLERANCE_K)


@pytest.mark.parametrize("persistence_regime", [False, True])
def test_a_regime_model_exports_like_torch(
    fields: Fields, tmp_path: Path, persistence_regime: bool
) -> None:
    design = ModelDesign(
        history=25,
        lags=[0, 1, 24],
        mean_window=6,
        hidden=4,
        layers=1,
        regime=True,
        persistence_regime=persistence_regime,
    )
    result = run_training(_tiny_config(tmp_path / "model", design), fields, lambda _: None)
    assert result.card.inputs.history == 25
    assert result.max_onnx_difference <= TOLERANCE_K


def test_a_damped_model_exports_like_torch_and_differs_from_the_undamped_one(
    fields: Fields, tmp_path: Path
) -> None:
    damped = TINY_DESIGN.model_copy(update={"damping": 0.9})
    result = run_training(_tiny_config(tmp_path / "damped", damped), fields, lambda _: None)
    plain = run_training(_tiny_config(tmp_path / "plain"), fields, lambda _: None)
    assert result.max_onnx_difference <= TOLERANCE_K
    assert result.card.training["design"]["damping"] == 0.9
    assert result.card.sha256 != plain.card.sha256
    damped_rmse = result.scores.values[("rmse", "model")]
    assert not np.allclose(damped_rmse, plain.scores.values[("rmse", "model")])


def test_several_variables_train_export_and_score_per_channel(tmp_path: Path) -> None:
    from tests.helpers.synthetic import synthetic_dataset
    from tests.pipelines.evaluate.stores import SYNTHETIC_LAT, SYNTHETIC_LON

    dataset = synthetic_dataset(240, ["t2m", "msl"], lat=SYNTHETIC_LAT, lon=SYNTHETIC_LON, seed=1)
    dataset.to_zarr(tmp_path / "two.zarr", zarr_format=2, consolidated=True)
    fields = load_fields(str(tmp_path / "two.zarr"), ["t2m", "msl"])
    config = TrainConfig.model_validate(
        {
            "analysis": {"url": "unused", "variables": ["t2m", "msl"]},
            "split": {"held_out": HELD_OUT.model_dump()},
            "design": {**TINY_DESIGN.model_dump(), "invariant": True},
            "schedule": TINY_SCHEDULE.model_dump(),
            "output": {"dir": str(tmp_path / "model"), "tolerance_k": 0.05},  # msl ~ 1e5 Pa
            "lead_hours": [1, 6],
        }
    )
    result = run_training(config, fields, report=lambda _: None)
    assert result.card.channel_names == ["t2m", "msl"]
    assert result.trained.scale.shape == (2,) and result.trained.scale[1] > result.trained.scale[0]
    assert result.max_onnx_difference <= 0.05  # msl ~ 1e5 Pa: a float32 ulp is ~0.008
    assert set(result.card.scores["scores"]) == {"t2m", "msl"}
