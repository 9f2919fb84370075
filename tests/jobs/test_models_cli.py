"""``climate models``: exit status 0 done, 1 refused, 2 configuration or connection error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from jobs.models import app
from pipelines.db import make_engine
from schemas.model_card import ModelCard
from tests.pipelines.registry_helpers import build_model, failing_rows, record_evaluation

runner = CliRunner()


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'climate.db'}")
    monkeypatch.setenv("MODEL_REGISTRY_URL", str(tmp_path / "registry"))
    monkeypatch.setenv("CLIMATE_CACHE_DIR", str(tmp_path / "cache"))


def climate(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def record_scores(tmp_path: Path, card: ModelCard, failing: bool = False) -> str:
    """Record an evaluation run of ``card`` that succeeded (passing scores unless ``failing``)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'climate.db'}")
    run = record_evaluation(engine, card, failing_rows() if failing else None)
    engine.dispose()
    return run


def test_register_list_show_promote_retire(tmp_path: Path) -> None:
    code, output = climate("list")
    assert code == EXIT_OK and "no models registered" in output

    first, _ = build_model(tmp_path, version="v1")
    second, card = build_model(tmp_path, version="v2", a=0.5)
    card_path = second.with_name("model.card.json")
    assert climate("register", str(first))[0] == EXIT_OK
    code, output = climate("register", str(second), "--card", str(card_path))
    assert code == EXIT_OK and f"registered linear v2 (candidate) sha256 {card.sha256}" in output

    code, output = climate("list")
    assert code == EXIT_OK and "v1" in output and "v2" in output and "candidate" in output

    code, output = climate("promote", "linear", "v2")
    assert code == EXIT_REFUSED
    assert "not promoted" in output and "run climate evaluate" in output

    record_scores(tmp_path, card, failing=True)
    code, output = climate("promote", "linear", "v2")
    assert code == EXIT_REFUSED and "lead 3 h" in output
    code, output = climate("show", "linear", "v2")
    assert code == EXIT_OK and "fails" in output and "lead 6 h" in output

    run = record_scores(tmp_path, card)
    code, output = climate("show", "linear", "v2")
    assert code == EXIT_OK and "history" in output and "rmse" in output and "passes" in output
    assert run in output  # the evaluation that counts
    code, output = climate("promote", "linear", "v2")
    assert code == EXIT_OK and "promoted linear v2" in output
    code, output = climate("show", "linear")
    assert code == EXIT_OK and "promoted" in output

    code, output = climate("retire", "linear", "v2")
    assert code == EXIT_REFUSED and "--force" in output
    code, output = climate("retire", "linear", "v2", "--force")
    assert code == EXIT_OK and "no promoted version now" in output
    assert climate("retire", "linear", "v1")[0] == EXIT_OK


def test_corrupt_model_is_refused_with_exit_one(tmp_path: Path) -> None:
    path, _ = build_model(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    code, output = climate("register", str(path))
    assert code == EXIT_REFUSED and "does not match the card" in output
    assert not (tmp_path / "registry").exists()


def test_missing_card_is_refused(tmp_path: Path) -> None:
    path, _ = build_model(tmp_path)
    path.with_name("model.card.json").unlink()
    code, output = climate("register", str(path))
    assert code == EXIT_REFUSED and "cannot read the model card" in output


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    code, output = climate("show", "nothing")
    assert code == EXIT_REFUSED and "climate models list" in output


def test_unreachable_database_exits_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://climate:secret@127.0.0.1:1/none")
    code, output = climate("list")
    assert code == EXIT_ERROR
    assert "127.0.0.1:1" in output and "secret" not in output and "DATABASE_URL" in output
