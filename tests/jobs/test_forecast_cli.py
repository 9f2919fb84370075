"""The forecast entrypoint: exit status 0 with its printed summary, 1 for a run that failed,
2 for input refused before any work; and the ``climate`` command table."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from jobs.forecast import EXIT_CLEAN, EXIT_ERROR, EXIT_FAILED, main
from pipelines.db import make_engine
from pipelines.ledger import RunLedger
from tests.helpers.processes import job_env, run_module
from tests.pipelines.forecast.helpers import forecast_config, make_model, make_store

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, xr.Dataset]:
    directory = tmp_path_factory.mktemp("cli")
    dataset = make_store(directory / "analysis.zarr")
    model, _ = make_model(directory, dataset)
    return directory / "analysis.zarr", model, dataset


def _config_file(tmp_path: Path, analysis: Path, model: Path, **overrides: object) -> Path:
    config = forecast_config(analysis, model, tmp_path / "forecast.zarr", **overrides)
    path = tmp_path / "forecast.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def test_a_run_exits_zero_and_prints_its_summary_and_device(
    tmp_path: Path, inputs: tuple[Path, Path, xr.Dataset], database_url: str
) -> None:
    analysis, model, _ = inputs
    config = _config_file(tmp_path, analysis, model, run_id="cli-ok", device="auto")
    result = run_module(
        ["jobs.forecast", "--config", str(config)], job_env(DATABASE_URL=database_url)
    )
    assert result.returncode == EXIT_CLEAN, result.stderr[-3000:]
    err = result.stderr
    assert "device auto: using cpu" in err  # said at the default log level
    assert "forecast run cli-ok: succeeded" in err
    assert "rows in forecasts table" in err and str(5 * 4 * 2 * 9 * 12) in err
    assert " at lat " in err  # the sample read back through open_forecast_store


def test_input_refused_before_any_work_exits_two(
    tmp_path: Path,
    inputs: tuple[Path, Path, xr.Dataset],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'climate.db'}")
    analysis, model, _ = inputs
    config = _config_file(tmp_path, analysis, model)
    assert main(["--config", str(config), "--set", "output.zarr.colour=red"]) == EXIT_ERROR
    assert "colour" in capsys.readouterr().err
    missing = _config_file(tmp_path, analysis, tmp_path / "absent.onnx")
    assert main(["--config", str(missing)]) == EXIT_ERROR
    assert "no such model file" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "forecast.zarr").exists()


def test_a_run_that_fails_exits_one_and_is_recorded_failed(
    tmp_path: Path,
    inputs: tuple[Path, Path, xr.Dataset],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
) -> None:
    database = database_url
    monkeypatch.setenv("DATABASE_URL", database)
    _, model, _ = inputs
    broken = tmp_path / "broken.zarr"
    make_store(broken)
    (broken / "t2m" / "1.0.0").write_bytes(b"not a blosc chunk")
    config = _config_file(tmp_path, broken, model, run_id="cli-doomed", batch_size=1)
    assert main(["--config", str(config)]) == EXIT_FAILED
    assert "run cli-doomed failed" in capsys.readouterr().err
    record = RunLedger(make_engine(database)).get("cli-doomed")
    assert record is not None and record.status == "failed"


def test_the_command_table() -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("ingest", "predict", "train", "evaluate", "models"):
        assert command in top.output
    models = runner.invoke(app, ["models", "--help"])
    for command in ("list", "show", "register", "promote", "retire"):
        assert command in models.output
    # each command reaches its job: a missing config is refused by the job with exit 2
    for command in ("ingest", "predict", "train", "evaluate"):
        result = runner.invoke(app, [command, "--config", "no/such/config.yaml"])
        assert result.exit_code == EXIT_ERROR, (command, result.output)
