"""Builders shared by the registry, skill gate and ``climate models`` tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from pipelines.ledger import RunLedger
from pipelines.skill_gate import DEFAULT_MARGINS
from pipelines.skill_table import SkillRow, SkillTable
from schemas.model_card import ModelCard
from tests.helpers.models import linear_graph, write_model

LAT = [10.0, 0.0, -10.0]
LON = [0.0, 10.0, 20.0, 30.0]
PERIOD = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 31, tzinfo=UTC))


def build_model(
    directory: Path,
    name: str = "linear",
    version: str = "v1",
    a: float = 0.75,
    history: int = 2,
    training: dict[str, Any] | None = None,
) -> tuple[Path, ModelCard]:
    """A tiny t2m model on a 3x4 grid written to ``directory/name-version/model.onnx``.

    ``training`` is the card's training section (e.g. ``{"periods": [[first, last]]}``); the
    default names no training period.
    """
    path = directory / f"{name}-{version}" / "model.onnx"
    graph = linear_graph(history, 1, len(LAT), len(LON), a, 1.0 - a, None, name)
    card = write_model(
        graph, path, lat=LAT, lon=LON, variables=["t2m"], history=history, name=name,
        version=version, training=training,
    )  # fmt: skip
    return path, card


def skill_rows(
    model: Mapping[int, float],
    persistence: float = 1.0,
    climatology: float = 2.0,
    variable: str = "t2m",
    metric: str = "rmse",
    period: tuple[datetime, datetime] = PERIOD,
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
            period_start=period[0],
            period_end=period[1],
        )
        for lead, value in model.items()
    ]


def passing_rows(
    variables: Sequence[str] = ("t2m",), period: tuple[datetime, datetime] = PERIOD
) -> list[SkillRow]:
    """Scores that pass the default gate: 20% below persistence at every gated lead."""
    return [
        row
        for variable in variables
        for row in skill_rows(
            {lead: 0.8 for lead in DEFAULT_MARGINS}, variable=variable, period=period
        )
    ]


def failing_rows(
    variables: Sequence[str] = ("t2m",), period: tuple[datetime, datetime] = PERIOD
) -> list[SkillRow]:
    """Scores that fail the default gate at 3 and 6 h only (5% below persistence there)."""
    model = {lead: 0.8 for lead in DEFAULT_MARGINS} | {3: 0.95, 6: 0.95}
    return [
        row for variable in variables for row in skill_rows(model, variable=variable, period=period)
    ]


def record_evaluation(
    engine: Engine,
    card: ModelCard,
    rows: Sequence[SkillRow] | None = None,
    status: str | None = "succeeded",
) -> str:
    """Record an evaluation of ``card``'s model the way ``climate evaluate`` does.

    Starts an ``evaluate`` run in the run ledger, records ``rows`` (by default passing scores
    for every channel of the card) under it, then finishes it with ``status`` (``None`` leaves
    it running). Returns the run id.
    """
    runs = RunLedger(engine)
    run_id = runs.start("evaluate", {"model": card.name, "version": card.version})
    if rows is None:
        rows = passing_rows(card.channel_names)
    SkillTable(engine).record(run_id, card.name, card.version, card.sha256, rows)
    if status is not None:
        runs.finish(run_id, status)
    return run_id
