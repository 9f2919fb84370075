"""``climate sync --to DIR`` and the refusals of ``climate serve --offline DIR``: exit status 0
synced (or up to date), 1 refused (nothing to sync), 2 bad input or an unusable directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from jobs.common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from jobs.serve import load_serve_file, offline_spec
from pipelines.db import make_engine, migrate
from pipelines.errors import ConfigError
from pipelines.models.registry import ModelRegistry
from pipelines.sync import MANIFEST, MODEL_FILE, verify_sync
from schemas.serve_config import ServeArgs, ServeFile
from schemas.settings import Settings
from tests.fixtures.s3 import free_port
from tests.helpers.forecast_runs import write_run
from tests.pipelines.registry_helpers import build_model, record_evaluation

ROOT = Path(__file__).resolve().parents[2]
NAME = "cli-t2m"
runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A serve config of the shipped file's shape naming this test's store and model."""
    database_url = f"sqlite:///{tmp_path / 'climate.db'}"
    for variable, value in {
        "DATABASE_URL": database_url,
        "MODEL_REGISTRY_URL": str(tmp_path / "registry"),
        "CLIMATE_CACHE_DIR": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    engine = make_engine(database_url)
    migrate(engine)
    engine.dispose()
    data = yaml.safe_load((ROOT / "configs/serve.yaml").read_text())
    args = data["applications"][0]["args"]
    args["forecast_store"] = str(tmp_path / "forecast")
    args["model"] = {"kind": "registry", "name": NAME, "version": "promoted"}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _promote(tmp_path: Path) -> None:
    settings = Settings()
    engine = make_engine(settings.database_url)
    path, card = build_model(tmp_path / "models", NAME, "v1")
    registry = ModelRegistry.from_settings(engine, settings)
    registry.register(path, card)
    record_evaluation(engine, card)
    registry.promote(NAME, "v1")
    write_run(str(tmp_path / "forecast"), card, leads=3)
    engine.dispose()


def climate(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_sync_exit_codes(config: Path, tmp_path: Path) -> None:
    edge = tmp_path / "edge"
    code, output = climate("sync", "--to", str(edge), "--config", str(config))
    assert code == EXIT_REFUSED and f"model {NAME} has no promoted version" in output

    _promote(tmp_path)
    code, output = climate("sync", "--to", str(edge), "-c", str(config), "--model", ":v1")
    assert code == EXIT_ERROR and "--model" in output

    code, output = climate("sync", "--to", str(edge), "-c", str(config), "--forecast-store", "x")
    assert code == EXIT_REFUSED and "x: no committed forecast run" in output

    code, output = climate("sync", "--to", str(edge), "--config", str(config))
    assert code == EXIT_OK, output
    assert f"synced model {NAME} v1" in output and "0 API key(s)" in output
    assert verify_sync(edge).model.version == "v1"
    code, output = climate("sync", "--to", str(edge), "--config", str(config), "--model", NAME)
    assert code == EXIT_OK and "is up to date" in output

    closed = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", f"postgresql+psycopg://climate@127.0.0.1:{closed}/climate")
        code, output = climate("sync", "--to", str(edge), "--config", str(config))
    assert code == EXIT_ERROR and f"127.0.0.1:{closed}" in output
    assert verify_sync(edge).model.version == "v1"  # left as it was

    missing = tmp_path / "missing.yaml"
    code, output = climate("sync", "--to", str(edge), "--config", str(missing))
    assert code == EXIT_ERROR and "missing.yaml" in output


def test_the_installed_command_syncs(config: Path, tmp_path: Path) -> None:
    _promote(tmp_path)
    climate_bin = Path(sys.executable).parent / "climate"
    edge = tmp_path / "edge"
    command = [str(climate_bin), "sync", "--to", str(edge), "--config", str(config), "--no-keys"]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, check=False)
    assert done.returncode == EXIT_OK, done.stderr
    assert verify_sync(edge).keys is None


def test_offline_args_need_a_model_file_and_keys_or_no_auth() -> None:
    base = {"forecast_store": "edge/forecast", "offline": True}
    with pytest.raises(ValueError, match="offline: model must be a file"):
        ServeArgs.model_validate({**base, "model": {"name": NAME}, "auth": {"required": False}})
    with pytest.raises(ValueError, match=r"offline: auth\.required needs auth\.keys_file"):
        ServeArgs.model_validate({**base, "model": "edge/model/model.onnx"})
    args = ServeArgs.model_validate(
        {**base, "model": "edge/model/model.onnx", "auth": {"keys_file": "edge/keys.json"}}
    )
    assert args.offline and args.model.kind == "file"
    assert not ServeArgs.model_validate({"forecast_store": "x", "model": NAME}).offline


def test_serve_offline_refuses_what_is_not_a_whole_sync(config: Path, tmp_path: Path) -> None:
    _promote(tmp_path)
    edge = tmp_path / "edge"
    code, output = climate("serve", "--offline", str(edge), "--config", str(config))
    assert code == EXIT_ERROR and "no such directory" in output  # before Ray or Serve start

    assert climate("sync", "--to", str(edge), "-c", str(config), "--no-keys")[0] == EXIT_OK
    code, output = climate("serve", "--offline", str(edge), "--config", str(config))
    assert code == EXIT_ERROR and "synced without API keys" in output

    spec = load_serve_file(str(config))
    data = spec.model_dump()
    data["applications"][0]["args"]["auth"]["required"] = False
    no_auth = ServeFile.model_validate(data)
    args = offline_spec(no_auth, edge).applications[0].args
    assert args.offline and args.auth.keys_file is None
    assert args.model.kind == "file" and args.model.path == str(edge.absolute() / MODEL_FILE)
    assert args.forecast_store == str(edge.absolute() / "forecast")

    (edge / MODEL_FILE).write_bytes(b"not the model")
    code, output = climate("serve", "--offline", str(edge), "--config", str(config))
    assert code == EXIT_ERROR and "model/model.onnx changed since it was synced" in output

    assert climate("sync", "--to", str(edge), "-c", str(config))[0] == EXIT_OK  # repaired
    (edge / MANIFEST).unlink()
    with pytest.raises(ConfigError, match=r"no sync\.json"):
        offline_spec(spec, edge)
    code, output = climate("serve", "--offline", str(edge), "--config", str(config))
    assert code == EXIT_ERROR and "not a complete sync" in output
