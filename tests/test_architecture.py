"""The house rules of docs/architecture.md, checked on the source: which room imports which."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "schemas", "jobs", "serve")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for path in _modules(folder):
        hits = sorted(
            name
            for name in _imports(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("schemas", ("pipelines", "jobs", "serve", "tests")),
        ("pipelines", ("jobs", "serve", "tests", "bench")),
        ("jobs", ("serve", "tests", "bench")),
        ("serve", ("jobs", "tests", "bench", "pipelines.forecast.runner", "pipelines.ingest")),
        ("pipelines/models", ("ray", "zarr", "pipelines.forecast", "pipelines.ingest",
                              "pipelines.ray_data", "pipelines.analysis_store",
                              "pipelines.training", "pipelines.evaluate")),
        ("pipelines/training", ("pipelines.evaluate", "pipelines.forecast", "ray")),
        ("pipelines/evaluate", ("pipelines.training", "pipelines.forecast", "ray")),
    ],
)  # fmt: skip
def test_rooms_import_only_what_they_may(folder: str, forbidden: tuple[str, ...]) -> None:
    assert _offenders(folder, forbidden) == {}


def test_the_runtime_imports_only_the_card_the_artefacts_and_the_errors() -> None:
    ours = {
        name
        for name in _imports(ROOT / "pipelines/models/runtime.py")
        if name.split(".")[0] in PACKAGES
    }
    allowed = {"pipelines.errors", "pipelines.models.artefacts", "schemas.model_card"}
    assert {name.rsplit(".", 1)[0] if name not in allowed else name for name in ours} <= allowed


def test_only_the_adapter_imports_ray() -> None:
    users = {
        module
        for module, names in _offenders("pipelines", ("ray",)).items()
        if any(name == "ray" or name.startswith("ray.") for name in names)
    }
    assert users == {"pipelines/ray_data.py"}


def test_the_offenders_check_can_fail() -> None:
    assert "pipelines/ray_data.py" in _offenders("pipelines", ("ray",))
