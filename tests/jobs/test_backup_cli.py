"""``climate backup`` / ``climate restore``: exit status 0 done, 1 refused, 2 bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from pipelines.api_keys import ApiKeys
from pipelines.db import make_engine, migrate
from pipelines.models.registry import ModelRegistry
from tests.pipelines.backup.helpers import checksums, drop_everything
from tests.pipelines.registry_helpers import build_model

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'climate.db'}",
        "MODEL_REGISTRY_URL": str(tmp_path / "registry"),
        "CLIMATE_CACHE_DIR": str(tmp_path / "cache"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CLIMATE_BACKUP_URL", raising=False)
    engine = make_engine(values["DATABASE_URL"])
    migrate(engine)
    path, _ = build_model(tmp_path)
    ModelRegistry(engine, values["MODEL_REGISTRY_URL"]).register(path)
    ApiKeys(engine, cache_ttl_s=0).create("acme")
    engine.dispose()
    return values


def climate(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_backup_and_restore_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    backups = str(tmp_path / "backups")
    code, output = climate("backup", "--to", backups, "--keep", "2")
    assert code == EXIT_OK, output
    assert "backed up" in output and "2 registry objects" in output  # ONNX file and card
    (name,) = [p.name for p in Path(backups).iterdir()]

    engine = make_engine(env["DATABASE_URL"])
    before = checksums(engine)
    code, output = climate("restore", "--from", backups)
    assert code == EXIT_REFUSED and "is not empty" in output and "--force" in output

    drop_everything(engine)
    code, output = climate("restore", "--from", backups, "--backup", name)
    assert code == EXIT_OK, output
    assert f"restored {name}" in output and "api_keys" in output
    assert checksums(engine) == before

    dump = Path(backups, name, "db", "models.parquet")
    dump.write_bytes(dump.read_bytes()[:-1] + b"\0")
    code, output = climate("restore", "--from", backups, "--force")
    assert code == EXIT_REFUSED
    assert "db/models.parquet" in output and "restore another backup" in output
    assert checksums(engine) == before
    engine.dispose()


def test_bad_input_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    code, output = climate("restore", "--from", str(tmp_path / "none"))
    assert code == EXIT_ERROR and "no complete backup at" in output
    code, output = climate("backup", "--to", str(tmp_path / "b"), "--keep", "0")
    assert code == EXIT_ERROR and "--keep" in output
    code, output = climate("backup")
    assert code == EXIT_ERROR and "--to" in output


def test_the_console_script_takes_the_url_from_the_environment(
    env: dict[str, str], tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    command = [str(Path(sys.executable).with_name("climate")), "backup"]
    child = {**os.environ, **env, "CLIMATE_BACKUP_URL": str(backups)}
    done = subprocess.run(command, env=child, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == EXIT_OK, done.stderr
    assert len(list(backups.glob("*/manifest.json"))) == 1
    done = subprocess.run(
        [*command[:1], "restore", "--backup", "19990101T000000.000000Z"],
        env=child, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_ERROR
    assert "no backup '19990101T000000.000000Z'" in done.stderr
    assert "Traceback" not in done.stderr
