"""The model registry on a local root and on a real S3 API, with SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipelines.errors import ModelError, SinkError
from pipelines.ledger import RunLedger
from pipelines.models.artefact_store import CARD_NAME, ONNX_NAME
from pipelines.models.artefacts import file_sha256
from pipelines.models.registry import ModelRegistry
from pipelines.models.runtime import ModelRuntime
from pipelines.skill_table import SkillTable
from schemas.model_card import card_path_for
from schemas.registry_tables import RegisteredModel
from schemas.settings import Settings
from tests.fixtures.s3 import S3Server
from tests.pipelines.registry_helpers import (
    build_model,
    failing_rows,
    passing_rows,
    record_evaluation,
    skill_rows,
)

MODELS = RegisteredModel.__table__


class Root:
    """A registry root and a way to list what is stored under it, outside the registry."""

    def __init__(self, url: str, server: S3Server | None = None, bucket: str = "") -> None:
        self.url = url
        self.server = server
        self.bucket = bucket

    def files(self) -> list[str]:
        if self.server is None:
            root = Path(self.url)
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        listing = self.server.client().list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def key(self, name: str, version: str, file: str) -> str:
        prefix = "models/" if self.server is not None else ""
        return f"{prefix}{name}/{version}/{file}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Root:
    if request.param == "local":
        return Root(str(tmp_path / "registry"))
    server: S3Server = request.getfixturevalue("s3_env")
    bucket = f"registry-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    return Root(f"s3://{bucket}/models", server, bucket)


@pytest.fixture
def local_root(tmp_path: Path) -> Root:
    return Root(str(tmp_path / "registry"))


def make_registry(engine: Engine, root: Root, tmp_path: Path) -> ModelRegistry:
    settings = Settings(model_registry_url=root.url)
    return ModelRegistry.from_settings(engine, settings, cache=tmp_path / "cache")


@pytest.fixture
def registry(engine: Engine, local_root: Root, tmp_path: Path) -> ModelRegistry:
    return make_registry(engine, local_root, tmp_path)


def count_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(MODELS)) or 0)


def test_round_trip(engine: Engine, root: Root, tmp_path: Path) -> None:
    registry = make_registry(engine, root, tmp_path)
    path, card = build_model(tmp_path)
    record = registry.register(path)
    assert (record.name, record.version, record.status) == ("linear", "v1", "candidate")
    assert record.sha256 == card.sha256 and record.card == card
    assert record.artefact_url.endswith("linear/v1/model.onnx")
    assert root.files() == [
        root.key("linear", "v1", CARD_NAME),
        root.key("linear", "v1", ONNX_NAME),
    ]
    assert registry.register(path, card_path_for(path)) == record  # again: a no-op
    assert registry.list() == [record] and registry.get("linear", "v1") == record

    fetched, fetched_card = registry.fetch("linear", "v1")
    assert fetched.parent.is_relative_to(tmp_path / "cache")
    assert file_sha256(fetched) == card.sha256 and fetched_card == card
    runtime = ModelRuntime.load(fetched, fetched_card, device="cpu")
    assert runtime.card.version == "v1"
    assert registry.fetch("linear", "v1")[0] == fetched  # served from the cache

    record_evaluation(engine, card)
    registry.promote("linear", "v1")
    assert registry.fetch("linear")[0] == fetched


@pytest.mark.parametrize("fault", ["corrupt file", "wrong sha256", "wrong input spec"])
def test_bad_models_are_refused_and_leave_nothing(
    engine: Engine, root: Root, tmp_path: Path, fault: str
) -> None:
    registry = make_registry(engine, root, tmp_path)
    path, card = build_model(tmp_path)
    if fault == "corrupt file":
        path.write_bytes(path.read_bytes()[:100])
        card = card.model_copy(update={"sha256": file_sha256(path)})
        expected = "ONNX Runtime cannot load"
    elif fault == "wrong sha256":
        card = card.model_copy(update={"sha256": "0" * 64})
        expected = f"sha256 {file_sha256(path)} does not match the card's {'0' * 64}"
    else:  # the graph takes 2 past fields, the card says 3
        card = card.model_copy(update={"inputs": card.inputs.model_copy(update={"history": 3})})
        expected = "does not match its card"
    with pytest.raises(ModelError, match=expected):
        registry.register(path, card)
    assert count_rows(engine) == 0
    assert root.files() == []


def test_same_version_with_another_file_or_card_is_refused(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    path, card = build_model(tmp_path)
    first = registry.register(path, card)
    other_path, other = build_model(tmp_path / "other", a=0.5)
    with pytest.raises(ModelError, match=f"already exists with sha256 {card.sha256}"):
        registry.register(other_path, other)
    edited = card.model_copy(update={"training": {"kind": "edited"}})
    with pytest.raises(ModelError, match=r"different card .training"):
        registry.register(path, edited)
    assert registry.list() == [first]


def test_unreachable_bucket_registers_nothing(
    engine: Engine, s3_env: S3Server, tmp_path: Path
) -> None:
    root = Root("s3://no-such-bucket-here/models")
    registry = make_registry(engine, root, tmp_path)
    path, _ = build_model(tmp_path)
    with pytest.raises(SinkError, match="bucket does not exist"):
        registry.register(path)
    assert count_rows(engine) == 0


def register_evaluated(registry: ModelRegistry, tmp_path: Path, versions: list[str]) -> None:
    """Register ``versions`` of ``linear``, each with passing scores of a succeeded run."""
    for version, a in zip(versions, (0.75, 0.5, 0.25), strict=False):
        path, card = build_model(tmp_path, version=version, a=a)
        registry.register(path)
        record_evaluation(registry.engine, card)


def test_promote_demotes_the_previous_version(registry: ModelRegistry, tmp_path: Path) -> None:
    register_evaluated(registry, tmp_path, ["v1", "v2"])
    assert registry.promoted("linear") is None
    registry.promote("linear", "v1")
    promoted = registry.promote("linear", "v2")
    assert promoted.status == "promoted" and promoted.promoted_at is not None
    assert registry.get("linear", "v1").status == "candidate"
    assert registry.promoted("linear") == promoted
    assert registry.promote("linear", "v2") == promoted  # already promoted: a no-op


def test_refused_promotion_keeps_the_promoted_model(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    register_evaluated(registry, tmp_path, ["v1"])
    path, card = build_model(tmp_path, version="v2", a=0.5)
    registry.register(path)
    record_evaluation(registry.engine, card, failing_rows())
    registry.promote("linear", "v1")
    with pytest.raises(ModelError, match=r"linear v1 stays promoted(.|\n)*lead 3 h(.|\n)*lead 6"):
        registry.promote("linear", "v2")
    assert registry.promoted("linear") == registry.get("linear", "v1")
    assert registry.get("linear", "v2").status == "candidate"


def test_promotion_gate_reads_the_latest_succeeded_evaluation(
    engine: Engine, registry: ModelRegistry, tmp_path: Path
) -> None:
    record = registry.register(build_model(tmp_path)[0])
    skill, runs = SkillTable(engine), RunLedger(engine)
    with pytest.raises(ModelError, match="not evaluated"):
        registry.promote("linear", "v1")
    run = runs.start("evaluate", {})
    skill.record(run, "linear", "v1", record.sha256, skill_rows({1: 0.8, 3: 0.8, 6: 0.8}))
    runs.finish(run, "succeeded")
    with pytest.raises(ModelError, match="not evaluated at lead 12 h"):
        registry.promote("linear", "v1")
    runs.start("evaluate", {}, run_id=run)  # a re-run of the same id replaces its scores
    skill.record(run, "linear", "v1", record.sha256, passing_rows())
    with pytest.raises(ModelError, match=f"run {run} does not count(.|\n)*'running'"):
        registry.promote("linear", "v1")  # not finished yet
    runs.finish(run, "succeeded")
    assert registry.promote("linear", "v1").status == "promoted"


def test_retire(registry: ModelRegistry, tmp_path: Path) -> None:
    register_evaluated(registry, tmp_path, ["v1", "v2"])
    registry.promote("linear", "v1")
    retired = registry.retire("linear", "v2")
    assert retired.status == "retired" and retired.retired_at is not None
    with pytest.raises(ModelError, match="retired and cannot be promoted"):
        registry.promote("linear", "v2")
    assert registry.fetch("linear", "v2")[1].version == "v2"  # files are kept

    with pytest.raises(ModelError, match="is the promoted version"):
        registry.retire("linear", "v1")
    assert registry.promoted("linear") is not None
    registry.retire("linear", "v1", force=True)
    assert registry.promoted("linear") is None
    with pytest.raises(ModelError, match="no promoted version"):
        registry.fetch("linear")


def test_unknown_version_names_the_known_ones(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.register(build_model(tmp_path)[0])
    with pytest.raises(ModelError, match=r"no version 'v9'.*registered versions: v1"):
        registry.get("linear", "v9")
    with pytest.raises(ModelError, match="no version"):
        registry.promote("linear", "v9")


def test_corrupted_artefact_is_detected_on_fetch(
    engine: Engine, root: Root, tmp_path: Path
) -> None:
    registry = make_registry(engine, root, tmp_path)
    path, _ = build_model(tmp_path)
    record = registry.register(path)
    other, _ = build_model(tmp_path / "other", a=0.5)
    registry.store.fs.put_file(str(other), record.artefact_url)
    with pytest.raises(ModelError, match=r"artefact corrupted in the registry.*sha256"):
        registry.fetch("linear", "v1")
    registry.store.fs.rm(record.artefact_url)
    registry.store.fs.invalidate_cache()
    with pytest.raises(ModelError, match=r"artefact corrupted in the registry.*missing"):
        registry.fetch("linear", "v1")


def test_database_allows_one_promoted_version_per_name(
    registry: ModelRegistry, engine: Engine, tmp_path: Path
) -> None:
    register_evaluated(registry, tmp_path, ["v1", "v2"])
    registry.promote("linear", "v1")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(update(MODELS).where(MODELS.c.version == "v2").values(status="promoted"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        row = dict(registry_row(engine, "v2"), version="v1")
        conn.execute(insert(MODELS).values(**row))


def registry_row(engine: Engine, version: str) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(select(MODELS).where(MODELS.c.version == version)).one()
    return {k: v for k, v in row._mapping.items() if k != "id"}


def test_unsafe_names_are_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    path, card = build_model(tmp_path)
    with pytest.raises(ModelError, match="cannot be a registry key"):
        registry.register(path, card.model_copy(update={"version": "../v1"}))
    assert count_rows(registry.engine) == 0


def test_concurrent_registrations_and_promotions(
    registry: ModelRegistry, tmp_path: Path, local_root: Root
) -> None:
    built = {v: build_model(tmp_path, version=v, a=a) for v, a in (("v1", 0.75), ("v2", 0.5))}
    with ThreadPoolExecutor(max_workers=4) as pool:
        records = list(pool.map(lambda v: registry.register(built[v][0]), ["v1", "v1", "v2", "v2"]))
    assert len({r.id for r in records}) == 2 and len(registry.list()) == 2
    assert len(local_root.files()) == 4
    for _, card in built.values():
        record_evaluation(registry.engine, card)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda v: registry.promote("linear", v), ["v1", "v2"] * 4))
    statuses = sorted(r.status for r in registry.list())
    assert statuses == ["candidate", "promoted"]
