"""Promotion is gated inside the registry: only succeeded, held-out evaluations count.

``ModelRegistry.promote`` is called directly (no CLI): it applies the skill gate itself, counts
only the scores of evaluation runs that succeeded in the run ledger and that scored no period
the model was trained on; ``run_evaluation`` refuses a held-out period inside the training
periods before any compute.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from pipelines.errors import ModelError
from pipelines.evaluate.pipeline import run_evaluation
from pipelines.models.registry import ModelRegistry
from pipelines.periods import check_held_out, overlapping, training_periods
from pipelines.skill_gate import promotion_verdict
from pipelines.skill_table import SkillTable
from schemas.evaluate_config import EvaluateConfig
from schemas.model_card import ModelCard
from schemas.settings import Settings
from schemas.train_config import TimeRange
from tests.pipelines.registry_helpers import (
    build_model,
    failing_rows,
    passing_rows,
    record_evaluation,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CARD = ROOT / "models" / "t2m-resconv" / "model.card.json"
EVALUATE_YAML = ROOT / "configs" / "evaluate.yaml"
TRAINED = {"periods": [["2020-01-01T00:00:00Z", "2020-01-20T23:00:00Z"]]}
TRAINED_SHOWN = "2020-01-01T00:00Z..2020-01-20T23:00Z"
HELD_OUT = (datetime(2020, 1, 21, tzinfo=UTC), datetime(2020, 1, 31, tzinfo=UTC))


def utc(day: int, hour: int = 0) -> datetime:
    return datetime(2020, 1, day, hour, tzinfo=UTC)


@pytest.fixture
def registry(engine: Engine, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(engine, str(tmp_path / "registry"), cache=tmp_path / "cache")


def register(
    registry: ModelRegistry,
    tmp_path: Path,
    version: str,
    a: float,
    training: dict[str, Any] | None = None,
) -> ModelCard:
    path, card = build_model(tmp_path, version=version, a=a, training=training)
    registry.register(path)
    return card


@pytest.fixture
def promoted_v1(registry: ModelRegistry, tmp_path: Path) -> ModelCard:
    """``linear v1``, evaluated and promoted; v2 is registered and never evaluated."""
    card = register(registry, tmp_path, "v1", 0.75)
    record_evaluation(registry.engine, card)
    registry.promote("linear", "v1")
    return register(registry, tmp_path, "v2", 0.5)


def assert_unchanged(registry: ModelRegistry) -> None:
    """v1 stays promoted, v2 stays a candidate."""
    v1 = registry.get("linear", "v1")
    assert registry.promoted("linear") == v1 and v1.status == "promoted"
    assert registry.get("linear", "v2").status == "candidate"


# -- the library gates every promotion ---------------------------------------------------------


def test_promote_without_scores_is_refused_by_the_library(
    registry: ModelRegistry, promoted_v1: ModelCard
) -> None:
    before = registry.get("linear", "v1")
    with pytest.raises(ModelError) as refused:
        registry.promote("linear", "v2")
    message = str(refused.value)
    assert "linear v2 was not promoted (linear v1 stays promoted)" in message
    assert "not evaluated: no scores were recorded" in message and "climate evaluate" in message
    assert_unchanged(registry)
    assert registry.get("linear", "v1").promoted_at == before.promoted_at


def test_failing_scores_are_refused_by_the_library(
    registry: ModelRegistry, promoted_v1: ModelCard
) -> None:
    record_evaluation(registry.engine, promoted_v1, failing_rows())
    with pytest.raises(ModelError, match=r"stays promoted(.|\n)*t2m at lead 3 h(.|\n)*lead 6 h"):
        registry.promote("linear", "v2")
    assert_unchanged(registry)


def test_the_first_promotion_is_gated_too(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path, "v1", 0.75)
    with pytest.raises(ModelError, match="no version of linear is promoted; nothing changed"):
        registry.promote("linear", "v1")
    assert registry.promoted("linear") is None


def test_margins_are_a_parameter_not_a_way_around(
    registry: ModelRegistry, promoted_v1: ModelCard
) -> None:
    record_evaluation(registry.engine, promoted_v1)  # 20% better than persistence
    with pytest.raises(ModelError, match="at least 30% below"):
        registry.promote("linear", "v2", margins={1: 0.3})
    assert_unchanged(registry)
    assert registry.promote("linear", "v2", margins={1: 0.2, 24: 0.1}).status == "promoted"


def test_margins_cannot_lower_the_default_bar(
    registry: ModelRegistry, promoted_v1: ModelCard
) -> None:
    record_evaluation(registry.engine, promoted_v1, failing_rows())  # 5% below at 3 and 6 h
    with pytest.raises(ModelError, match="at least 10% below"):
        registry.promote("linear", "v2", margins={1: 0.0, 3: 0.0, 6: 0.0, 12: 0.0, 24: 0.0})
    assert_unchanged(registry)


# -- only succeeded runs count -----------------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "partial", None])
def test_scores_of_a_run_that_did_not_succeed_never_count(
    registry: ModelRegistry, promoted_v1: ModelCard, status: str | None
) -> None:
    run = record_evaluation(registry.engine, promoted_v1, passing_rows(), status=status)
    with pytest.raises(ModelError) as refused:
        registry.promote("linear", "v2")
    message = str(refused.value)
    assert "not evaluated: none of the 1 evaluation run(s) that scored this model counts" in message
    assert f"run {run} does not count" in message
    assert repr(status or "running") in message and "only the scores of a succeeded" in message
    assert_unchanged(registry)


def test_failing_succeeded_run_after_passing_failed_run_is_refused(
    registry: ModelRegistry, promoted_v1: ModelCard
) -> None:
    record_evaluation(registry.engine, promoted_v1, passing_rows(), status="failed")
    counted = record_evaluation(registry.engine, promoted_v1, failing_rows())
    verdict = promotion_verdict(SkillTable(registry.engine), promoted_v1)
    assert verdict.run is not None and verdict.run.run_id == counted
    with pytest.raises(ModelError, match=r"t2m at lead 3 h(.|\n)*t2m at lead 6 h"):
        registry.promote("linear", "v2")
    assert_unchanged(registry)


def test_a_newer_failed_run_does_not_undo_a_succeeded_one(
    registry: ModelRegistry, promoted_v1: ModelCard
) -> None:
    counted = record_evaluation(registry.engine, promoted_v1)
    record_evaluation(registry.engine, promoted_v1, failing_rows(), status="failed")
    verdict = promotion_verdict(SkillTable(registry.engine), promoted_v1)
    assert verdict.passes and verdict.run is not None and verdict.run.run_id == counted
    assert registry.promote("linear", "v2").status == "promoted"
    assert registry.get("linear", "v1").status == "candidate"


# -- only held-out periods count ---------------------------------------------------------------


def test_scores_on_a_training_period_never_count(registry: ModelRegistry, tmp_path: Path) -> None:
    card = register(registry, tmp_path, "v1", 0.75, training=TRAINED)
    run = record_evaluation(registry.engine, card, passing_rows(period=(utc(15), utc(25))))
    with pytest.raises(ModelError) as refused:
        registry.promote("linear", "v1")
    message = str(refused.value)
    assert "not evaluated" in message and f"run {run} does not count" in message
    assert "2020-01-15T00:00Z..2020-01-25T00:00Z" in message
    assert f"overlap the model's training period(s) {TRAINED_SHOWN}" in message
    assert registry.promoted("linear") is None

    record_evaluation(registry.engine, card, passing_rows(period=HELD_OUT))
    assert registry.promote("linear", "v1").status == "promoted"


def test_a_newer_run_on_training_data_is_skipped_and_named(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    card = register(registry, tmp_path, "v1", 0.75, training=TRAINED)
    counted = record_evaluation(registry.engine, card, failing_rows(period=HELD_OUT))
    skipped = record_evaluation(registry.engine, card, passing_rows(period=(utc(20), utc(31))))
    verdict = promotion_verdict(SkillTable(registry.engine), card)
    assert verdict.run is not None and verdict.run.run_id == counted
    with pytest.raises(ModelError) as refused:
        registry.promote("linear", "v1")
    message = str(refused.value)
    assert "t2m at lead 3 h" in message
    assert f"run {skipped} does not count" in message and TRAINED_SHOWN in message


def test_a_card_without_training_periods_has_nothing_to_overlap(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    card = register(registry, tmp_path, "v1", 0.75, training={"kind": "hand-made"})
    assert training_periods(card) == []
    record_evaluation(registry.engine, card)
    assert registry.promote("linear", "v1").status == "promoted"


def test_unreadable_training_periods_refuse_promotion(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    card = register(registry, tmp_path, "v1", 0.75, training={"periods": [["yesterday"]]})
    record_evaluation(registry.engine, card)
    with pytest.raises(ModelError, match=r"training.periods(.|\n)*fix the card"):
        registry.promote("linear", "v1")
    assert registry.promoted("linear") is None


def test_overlap_bounds() -> None:
    trained = [(utc(1), utc(20, 23))]
    # Scored initial times: both ends included.
    assert overlapping(trained, utc(20, 23), utc(31)) == trained
    assert overlapping(trained, utc(21), utc(31)) == []
    assert overlapping(trained, None, utc(1)) == trained
    # A TimeRange: the end is excluded.
    assert overlapping(trained, None, utc(1), end_included=False) == []
    assert overlapping(trained, None, utc(1, 1), end_included=False) == trained
    assert overlapping(trained, None, None) == trained
    two = [(utc(1), utc(5)), (utc(10), utc(15))]
    assert overlapping(two, utc(6), utc(9)) == []
    assert overlapping(two, utc(4), utc(12)) == two


# -- climate evaluate refuses training data ----------------------------------------------------


def test_the_shipped_model_and_config_are_held_out() -> None:
    card = ModelCard.read(SHIPPED_CARD)
    assert training_periods(card) == [
        (datetime(2019, 3, 1, tzinfo=UTC), datetime(2019, 3, 24, 23, tzinfo=UTC))
    ]
    config = yaml.safe_load(EVALUATE_YAML.read_text())
    check_held_out(TimeRange.model_validate(config["split"]["held_out"]), card)  # no error


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2019, 3, 24, 23, tzinfo=UTC), None),
        (None, datetime(2019, 3, 1, 1, tzinfo=UTC)),
        (datetime(2019, 3, 10, tzinfo=UTC), datetime(2019, 3, 12, tzinfo=UTC)),
    ],
)
def test_a_held_out_period_inside_training_is_refused(
    start: datetime | None, end: datetime | None
) -> None:
    card = ModelCard.read(SHIPPED_CARD)
    with pytest.raises(ModelError) as refused:
        check_held_out(TimeRange(start=start, end=end), card)
    message = str(refused.value)
    assert "held_out period" in message and "2019-03-01T00:00Z..2019-03-24T23:00Z" in message
    assert "choose a held_out period outside the model's training periods" in message
    assert "after 2019-03-24T23:00Z" in message


def test_held_out_ending_where_training_starts_is_fine() -> None:
    card = ModelCard.read(SHIPPED_CARD)
    check_held_out(TimeRange(start=None, end=datetime(2019, 3, 1, tzinfo=UTC)), card)


def test_run_evaluation_refuses_training_data_before_any_compute(
    engine: Engine, tmp_path: Path
) -> None:
    data = yaml.safe_load(EVALUATE_YAML.read_text())
    data["analysis"] = str(tmp_path / "no-such-store.zarr")  # never opened
    data["model"]["path"] = str(SHIPPED_CARD.with_name("model.onnx"))
    data["split"]["held_out"] = {"start": "2019-03-20T00:00:00Z", "end": None}
    data["report"]["dir"] = str(tmp_path / "report")
    config = EvaluateConfig.model_validate(data)
    with pytest.raises(ModelError, match=r"held_out period 2019-03-20T00:00Z \(included\)"):
        run_evaluation(config, Settings(), engine, "never-started")
    assert not (tmp_path / "report").exists()
    assert SkillTable(engine).scored_runs(ModelCard.read(SHIPPED_CARD).sha256) == []
