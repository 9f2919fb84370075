"""``climate train`` and ``climate evaluate`` end to end: exit codes, files, skill table, report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch", reason="training needs the train extra (PyTorch)")

from jobs import evaluate as evaluate_job
from jobs import train as train_job
from pipelines.db import make_engine
from pipelines.errors import ModelError
from pipelines.ledger import RunLedger
from pipelines.models.artefacts import file_sha256
from pipelines.skill_table import SkillRow, SkillTable
from schemas.model_card import ModelCard
from tests.helpers.models import persistence_model
from tests.pipelines.evaluate.stores import (
    SHIPPED_MODEL,
    SYNTHETIC_LAT,
    SYNTHETIC_LON,
    sample_store,
    synthetic_store,
)

ROOT = Path(__file__).resolve().parents[2]
TRAIN_YAML = str(ROOT / "configs" / "train.yaml")
EVALUATE_YAML = str(ROOT / "configs" / "evaluate.yaml")
HELD_OUT = "split.held_out.start=2020-01-08T00:00:00Z"
TINY = [
    "design.history=6",
    "design.lags=[0, 1, 5]",
    "design.mean_window=6",
    "design.hidden=4",
    "design.layers=1",
    "design.regime=false",
    "schedule.members=1",
    "schedule.epochs=2",
    "schedule.rollout_steps=3",
    "schedule.stride=4",
    "lead_hours=[1, 3, 6, 12, 24]",
]


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'climate.db'}")
    monkeypatch.setenv("MODEL_REGISTRY_URL", str(tmp_path / "registry"))
    monkeypatch.setenv("CLIMATE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synthetic_store(tmp_path_factory.mktemp("store") / "analysis.zarr"))


def _skill(tmp_path: Path) -> SkillTable:
    return SkillTable(make_engine(f"sqlite:///{tmp_path / 'climate.db'}"))


def _matches_card(rows: list[SkillRow], card: ModelCard, rel: float) -> int:
    table = card.scores["scores"]
    for r in rows:
        stored = table[r.variable][r.metric][str(r.lead_hours)]
        assert stored["n_inits"] == r.n_inits
        for source in ("model", "persistence", "climatology"):
            value = getattr(r, f"{source}_value")
            if value is None:
                assert stored[source] is None
            else:
                assert value == pytest.approx(stored[source], rel=rel), (r, source)
    return len(rows)


def _sets(overrides: list[str] | tuple[str, ...]) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


def _train_tiny(store: str, out: Path, *extra: str) -> int:
    overrides = [f"analysis.url={store}", HELD_OUT, f"output.dir={out}", *TINY, *extra]
    return train_job.main(["--config", TRAIN_YAML, *_sets(overrides)])


def _evaluate(*overrides: str, config: str = EVALUATE_YAML) -> int:
    return evaluate_job.main(["--config", config, *_sets(overrides)])


def test_train_then_evaluate_records_scores_equal_to_the_card(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    assert _train_tiny(store, out, "output.register_model=true", "run_id=train-1") == 0
    card = ModelCard.read(out / "model.card.json")
    assert card.sha256 == file_sha256(out / "model.onnx")
    assert "promotion gate" in capsys.readouterr().err

    code = _evaluate(
        f"analysis={store}",
        f"model.path={out / 'model.onnx'}",
        HELD_OUT,
        "lead_hours=[1, 3, 6, 12, 24]",
        f"report.dir={tmp_path / 'report'}",
        "run_id=eval-1",
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "lat-weighted RMSE" in err and "persistence" in err
    rows = _skill(tmp_path).latest_for(card.sha256)
    assert _matches_card(rows, card, rel=1e-6) == 5 * 4
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## t2m" in report and "skill_t2m.png" in report
    ledger = RunLedger(make_engine(f"sqlite:///{tmp_path / 'climate.db'}"))
    assert ledger.get("eval-1").status == "succeeded"  # type: ignore[union-attr]
    assert ledger.get("train-1").status == "succeeded"  # type: ignore[union-attr]

    registry_config = tmp_path / "registry.yaml"
    data = yaml.safe_load(Path(EVALUATE_YAML).read_text())
    data["model"] = {"kind": "registry", "name": card.name, "version": card.version}
    registry_config.write_text(yaml.safe_dump(data))
    args = (f"analysis={store}", HELD_OUT, "lead_hours=[1, 3]", f"report.dir={tmp_path / 'r2'}")
    assert _evaluate(*args, config=str(registry_config)) == 0
    assert _evaluate(*args, "model.name=nothing", config=str(registry_config)) == 1


def test_training_is_reproducible_through_the_job(store: str, tmp_path: Path) -> None:
    assert _train_tiny(store, tmp_path / "a") == 0
    assert _train_tiny(store, tmp_path / "b") == 0
    assert file_sha256(tmp_path / "a" / "model.onnx") == file_sha256(tmp_path / "b" / "model.onnx")


def test_shipped_model_reproduces_its_card_scores(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    card = ModelCard.read(SHIPPED_MODEL.with_name("model.card.json"))
    assert card.sha256 == file_sha256(SHIPPED_MODEL)
    sample = sample_store(tmp_path_factory.mktemp("sample"))
    code = _evaluate(
        f"analysis={sample}", f"model.path={SHIPPED_MODEL}", f"report.dir={tmp_path / 'report'}"
    )
    assert code == 0
    rows = _skill(tmp_path).latest_for(card.sha256)
    assert _matches_card(rows, card, rel=1e-4) == 24 * 4
    lead1 = next(r for r in rows if r.metric == "rmse" and r.lead_hours == 1)
    assert lead1.n_inits == 167 and round(lead1.persistence_value or 0, 3) == 0.578


def _copy_shipped(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    target = tmp_path / "m" / "model.onnx"
    target.parent.mkdir()
    shutil.copy(SHIPPED_MODEL, target)
    card = json.loads(SHIPPED_MODEL.with_name("model.card.json").read_text())
    return target, card


def _write_card(onnx: Path, card: dict[str, object]) -> None:
    onnx.with_name("model.card.json").write_text(json.dumps(card))


@pytest.mark.parametrize("damage", ["corrupt", "wrong_sha256", "wrong_history", "wrong_grid"])
def test_a_broken_model_is_refused(
    damage: str, store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx, card = _copy_shipped(tmp_path)
    if damage == "corrupt":
        onnx.write_bytes(b"not an onnx graph" * 100)
        card["sha256"] = file_sha256(onnx)
        expected = "ONNX Runtime cannot load"
    elif damage == "wrong_sha256":
        card["sha256"] = "0" * 64
        expected = "does not match the card"
    elif damage == "wrong_history":
        card["inputs"]["history"] = 12  # type: ignore[index]
        expected = "does not match its card"
    else:  # the card's grid is not the graph's: handshake
        card["inputs"]["grid"]["lat"] = [56.0, 55.0]  # type: ignore[index]
        expected = "does not match its card"
    _write_card(onnx, card)
    code = _evaluate(f"analysis={store}", f"model.path={onnx}", f"report.dir={tmp_path / 'r'}")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "refused" in err and expected in err


def test_a_store_that_does_not_fit_the_model_is_an_error(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _evaluate(f"analysis={store}", f"model.path={SHIPPED_MODEL}", HELD_OUT)
    assert code == 2 and "does not fit model" in " ".join(capsys.readouterr().err.split())


def test_bad_configs_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _evaluate("lead_hours=[0]") == 2
    assert _evaluate("surprise=1") == 2
    assert train_job.main(["--config", TRAIN_YAML, "--set", "design.lags=[1, 2]"]) == 2
    assert train_job.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_training_without_torch_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert train_job.main(["--config", TRAIN_YAML]) == 2
    assert ".[train]" in capsys.readouterr().err


def test_evaluation_never_imports_torch(store: str, tmp_path: Path) -> None:
    onnx = tmp_path / "m" / "model.onnx"
    persistence_model(onnx, SYNTHETIC_LAT, SYNTHETIC_LON)
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from jobs.evaluate import main\n"
        f"code = main(['--config', {EVALUATE_YAML!r}, '--set', 'analysis={store}', "
        f"'--set', 'model.path={onnx}', '--set', {HELD_OUT!r}, "
        f"'--set', 'report.dir={tmp_path / 'r'}'])\n"
        "assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m]]\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_export_that_disagrees_with_torch_is_refused_and_not_written(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def disagree(*args: object) -> float:
        raise ModelError("the exported ONNX model differs from the trained torch model by 1")

    monkeypatch.setattr("pipelines.training_run.check_equivalence", disagree)
    out = tmp_path / "model"
    assert _train_tiny(store, out) == 1
    assert "refused" in capsys.readouterr().err
    assert not list(out.iterdir())  # neither model.onnx, its card nor the partial file
