"""The shipped train and evaluate configs load; bad designs are refused at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import load_config
from schemas.evaluate_config import EvaluateConfig
from schemas.model_source import ModelFile, RegistryModel
from schemas.train_config import ModelDesign, TrainConfig

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_shipped_configs_load() -> None:
    train = load_config(TrainConfig, CONFIGS / "train.yaml")
    assert train.analysis.variables == ["t2m"] and train.split.train is None
    assert train.lead_hours == list(range(1, 25)) and train.output.dir == "models/t2m-resconv"
    evaluate = load_config(EvaluateConfig, CONFIGS / "evaluate.yaml")
    assert isinstance(evaluate.model, ModelFile)
    assert evaluate.model.path == "models/t2m-resconv/model.onnx"
    assert evaluate.split.held_out == train.split.held_out


def test_model_source_is_chosen_by_kind() -> None:
    config = load_config(
        EvaluateConfig,
        CONFIGS / "evaluate.yaml",
        ["model={kind: registry, name: t2m-resconv}"],
    )
    assert config.model == RegistryModel(name="t2m-resconv", version="promoted")


@pytest.mark.parametrize(
    ("design", "message"),
    [
        ({"lags": [1, 2]}, "start at 0"),
        ({"history": 6, "lags": [0, 6], "mean_window": 6}, "needs history > 6"),
        ({"history": 6, "lags": [0], "mean_window": 7}, "mean_window 7 > history 6"),
        ({"kernel": 4}, "must be odd"),
        ({"regime": True}, "regime needs lag 24"),
        ({"persistence_regime": True}, "regime needs lag 24"),
        ({"damping": 0.0}, "greater than 0"),
        ({"damping": 1.01}, "less than or equal to 1"),
    ],
)
def test_bad_designs_are_refused(design: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelDesign.model_validate(design)


def test_members_need_a_linear_stencil() -> None:
    with pytest.raises(ValueError, match=r"schedule\.members 3 averages"):
        load_config(TrainConfig, CONFIGS / "train.yaml", ["schedule.members=3", "design.layers=2"])
