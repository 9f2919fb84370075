"""Builders shared by the registry, skill gate and ``climate models`` tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from pipelines.skill_gate import DEFAULT_MARGINS
from pipelines.skill_table import SkillRow
from schemas.model_card import ModelCard
from tests.helpers.models import linear_graph, write_model

LAT = [10.0, 0.0, -10.0]
LON = [0.0, 10.0, 20.0, 30.0]
PERIOD = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 31, tzinfo=UTC))


def build_model(
    directory: Path, name: str = "linear", version: str = "v1", a: float = 0.75, history: int = 2
) -> tuple[Path, ModelCard]:
    """A tiny t2m model on a 3x4 grid written to ``directory/name-version/model.onnx``."""
    path = directory / f"{name}-{version}" / "model.onnx"
    graph = linear_graph(history, 1, len(LAT), len(LON), a, 1.0 - a, None, name)
    card = write_model(
        graph, path, lat=LAT, lon=LON, variables=["t2m"], history=history, name=name,
        version=version,
    )  # fmt: skip
    return path, card


def skill_rows(
    model: Mapping[int, float],
    persistence: float = 1.0,
    climatology: float = 2.0,
    variable: str = "t2m",
    metric: str = "rmse",
) -> list[SkillRow]:
    """One row per lead time with the model's score and constant baselines."""
    return [
        SkillRow(
            variable=variable,
            lead_hours=lead,
            metric=metric,
            model_value=value,
            persistence_value=persistence,
            climatology_value=climatology,
            n_inits=30,
            period_start=PERIOD[0],
            period_end=PERIOD[1],
        )
        for lead, value in model.items()
    ]


def passing_rows() -> list[SkillRow]:
    """Scores that pass the default gate: 20% below persistence at every gated lead."""
    return skill_rows({lead: 0.8 for lead in DEFAULT_MARGINS})
