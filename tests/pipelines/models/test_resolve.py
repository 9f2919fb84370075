"""One resolver from a model source to a verified local model; one device resolver."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pipelines.errors import ModelError
from pipelines.models.registry import ModelRegistry
from pipelines.models.resolve import resolve_device, resolve_model
from pipelines.models.runtime import cuda_available
from schemas.model_source import ModelFile, RegistryModel
from schemas.settings import Settings

SHIPPED = Path("models/t2m-resconv")


def test_a_file_is_verified_against_its_card(tmp_path: Path) -> None:
    model = resolve_model(ModelFile(path=str(SHIPPED / "model.onnx")), Settings())
    assert model.card.name == "t2m-resconv"
    copy = tmp_path / "model.onnx"
    shutil.copy(SHIPPED / "model.card.json", tmp_path / "model.card.json")
    copy.write_bytes((SHIPPED / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelError, match=r"sha256 .* does not match"):
        resolve_model(ModelFile(path=str(copy)), Settings())
    with pytest.raises(ModelError, match="no such model file"):
        resolve_model(ModelFile(path=str(tmp_path / "absent.onnx")), Settings())


def test_a_registry_source_gives_the_promoted_or_named_version(
    tmp_path: Path, engine: Engine
) -> None:
    settings = Settings(model_registry_url=str(tmp_path / "registry"))
    registry = ModelRegistry.from_settings(engine, settings, cache=tmp_path / "cache")
    record = registry.register(SHIPPED / "model.onnx")
    named = RegistryModel(name=record.name, version=record.version)
    model = resolve_model(named, settings, engine=engine)
    assert model.card.sha256 == record.sha256
    with pytest.raises(ModelError, match="no promoted version"):
        resolve_model(RegistryModel(name=record.name), settings, engine=engine)


def test_auto_says_which_device_it_picked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.models.resolve"):
        chosen = resolve_device("auto")
    assert chosen == ("cuda" if cuda_available() else "cpu")
    assert f"device auto: using {chosen}" in caplog.text
    assert resolve_device("auto", gpus=0) == "cpu"
    assert resolve_device("cpu", gpus=4) == "cpu"
    with pytest.raises(ModelError, match=r"no GPU.*set device: cpu"):
        resolve_device("cuda", gpus=0)
