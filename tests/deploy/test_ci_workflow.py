"""The hosted-CI workflow (.github/workflows/ci.yaml), validated offline against the GitHub
workflow schema that check-jsonschema ships (``--builtin-schema vendor.github-workflows``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import ROOT, secret_problems

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yaml"


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_workflow_matches_the_github_workflow_schema() -> None:
    result = check_jsonschema(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN = {
    "runs-on misspelled": ("    runs-on: ubuntu-24.04\n    timeout-minutes: 90", "    run-on: x"),
    "step without uses or run": (
        "      - name: make test\n        run:",
        "      - name: x\n        rn:",
    ),
    "unknown trigger": ("  workflow_dispatch:\n", "  workflow_dispatched:\n"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_workflow_fails_the_schema(name: str, tmp_path: Path) -> None:
    old, new = BROKEN[name]
    text = WORKFLOW.read_text()
    assert text.count(old) == 1, "the mutation did not apply"
    broken = tmp_path / "ci.yaml"
    broken.write_text(text.replace(old, new))
    assert check_jsonschema(broken).returncode != 0


def load() -> dict:
    workflow: dict = yaml.safe_load(WORKFLOW.read_text())
    return workflow


def test_ci_runs_make_test_on_python_311_with_postgres_and_redis() -> None:
    test = load()["jobs"]["test"]
    steps = test["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any(run.split()[:2] == ["make", "test"] for run in runs)
    (setup,) = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup["with"]["python-version"] == "3.11"
    services = test["services"]
    assert services["postgres"]["ports"] == ["5432:5432"]
    # the suite's fixtures: trust auth, user postgres, database test
    assert services["postgres"]["env"] == {
        "POSTGRES_HOST_AUTH_METHOD": "trust",
        "POSTGRES_DB": "test",
    }
    assert services["redis"]["ports"] == ["6379:6379"]


def test_ci_builds_both_images_without_pushing() -> None:
    images = load()["jobs"]["images"]
    extras = {m["extra"] for m in images["strategy"]["matrix"]["include"]}
    assert extras == {"cpu", "gpu"}
    uses = [s.get("uses", "") for s in images["steps"]]
    assert any(u.startswith("docker/setup-buildx-action@") for u in uses)
    (build,) = [
        s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert build["with"]["file"] == "deploy/Dockerfile"
    assert build["with"]["push"] is False
    assert "EXTRA=${{ matrix.extra }}" in build["with"]["build-args"]
    assert "BASE=${{ matrix.base }}" in build["with"]["build-args"]


def test_workflow_holds_no_secret() -> None:
    assert secret_problems(load()) == []
    assert load()["permissions"] == {"contents": "read"}
