"""The image (deploy/Dockerfile, parsed with dockerfile-parse) and the local stack
(deploy/compose.yaml, validated against the vendored Compose Specification schema)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.deploy.manifests import (
    DEPLOY,
    ROOT,
    SCHEMAS,
    get,
    k8s_objects,
    ray_pod_templates,
    secret_problems,
)

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_SCHEMA = SCHEMAS / "compose-spec.json"
ROOT_USERS = {"root", "0"}


def dockerfile_problems(path: Path) -> list[str]:
    """What the image lacks: two stages or more (a builder, a runtime from ${BASE} that copies
    from it), the BASE and EXTRA build args with the CPU defaults, EXTRA choosing the extra, a
    non-root USER and a HEALTHCHECK against /health in the final stage."""
    parser = DockerfileParser(str(path))
    instructions = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    froms = [i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM"]
    problems = []
    if len(froms) < 2:
        return [f"{len(froms)} FROM: not a multi-stage build"]
    global_args = dict(
        ins["value"].split("=", 1) if "=" in ins["value"] else (ins["value"], None)
        for ins in instructions[: froms[0]]
        if ins["instruction"] == "ARG"
    )
    if global_args.get("BASE") != "python:3.11-slim":
        problems.append(f"ARG BASE default is {global_args.get('BASE')}, not python:3.11-slim")
    if global_args.get("EXTRA") != "cpu":
        problems.append(f"ARG EXTRA default is {global_args.get('EXTRA')}, not cpu")
    stages = [instructions[start:end] for start, end in zip(froms, [*froms[1:], None], strict=True)]
    names = [s[0]["value"].split()[-1] if " AS " in s[0]["value"].upper() else "" for s in stages]
    if "builder" not in names:
        problems.append("no stage named builder")
    final = stages[-1]
    if final[0]["value"].split()[0] != "${BASE}":
        problems.append(f"final stage is FROM {final[0]['value']}, not FROM ${{BASE}}")
    if not any(i["instruction"] == "COPY" and "--from=builder" in i["value"] for i in final):
        problems.append("final stage copies nothing from the builder")
    runs = " ".join(i["value"] for s in stages for i in s if i["instruction"] == "RUN")
    if "[${EXTRA}]" not in runs:
        problems.append("no install of the project's ${EXTRA} extra")
    users = [i["value"].split(":")[0].strip() for i in final if i["instruction"] == "USER"]
    if not users or users[-1] in ROOT_USERS:
        problems.append(f"final stage runs as {users[-1] if users else 'root (no USER)'}")
    checks = [i["value"] for i in final if i["instruction"] == "HEALTHCHECK"]
    if not checks or checks[-1].upper().startswith("NONE") or "/health" not in checks[-1]:
        problems.append("final stage has no HEALTHCHECK against /health")
    return problems


def test_dockerfile_is_multistage_nonroot_with_healthcheck() -> None:
    assert dockerfile_problems(DOCKERFILE) == []


BROKEN_DOCKERFILES = {
    "root user": lambda text: text.replace("USER 10001:10001", "USER root"),
    "no user": lambda text: text.replace("USER 10001:10001\n", ""),
    "no healthcheck": lambda text: re.sub(r"HEALTHCHECK .*?\n  CMD .*?\n", "", text, flags=re.S),
    "one stage": lambda text: text[text.index("FROM ${BASE} AS runtime") :],
    "gpu by default": lambda text: text.replace("ARG EXTRA=cpu", "ARG EXTRA=gpu"),
    "no base arg": lambda text: text.replace("ARG BASE=python:3.11-slim\n", ""),
}


@pytest.mark.parametrize("name", list(BROKEN_DOCKERFILES))
def test_broken_dockerfile_is_found(name: str, tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    broken = BROKEN_DOCKERFILES[name](text)
    assert broken != text, "the mutation did not apply"
    path = tmp_path / "Dockerfile"
    path.write_text(broken)
    assert dockerfile_problems(path), name


def test_the_context_filter_keeps_the_venv_and_secrets_out() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "output", "deploy/secrets"} <= set(ignored)


# ---- compose ------------------------------------------------------------------------------------


def load_compose() -> dict:
    compose: dict = yaml.safe_load(COMPOSE.read_text())
    return compose


def compose_schema_problems(compose: dict) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]


def test_vendored_compose_schema_is_the_documented_one() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in (SCHEMAS / "README.md").read_text()
    assert json.loads(COMPOSE_SCHEMA.read_text())["title"] == "Compose Specification"


def test_compose_file_matches_the_compose_specification() -> None:
    assert compose_schema_problems(load_compose()) == []


BROKEN_COMPOSE = {
    "misspelled service key": lambda c: c["services"]["redis"].update(restat="always"),
    "misspelled top-level key": lambda c: c.update(volume=c.pop("volumes")),
    "bad depends_on condition": lambda c: c["services"]["ray-head"]["depends_on"][
        "postgres"
    ].update(condition="service_ready"),
    "ports as a mapping": lambda c: c["services"]["grafana"].update(ports={"3000": 3000}),
    "secret without source": lambda c: c["secrets"].update(extra={"fil": "./x"}),
}


@pytest.mark.parametrize("name", list(BROKEN_COMPOSE))
def test_broken_compose_fails_the_specification(name: str) -> None:
    compose = load_compose()
    BROKEN_COMPOSE[name](compose)
    assert compose_schema_problems(compose), name


def test_compose_runs_the_whole_local_stack() -> None:
    services = load_compose()["services"]
    assert {"ray-head", "ray-worker", "postgres", "redis", "minio", "prometheus", "grafana"} <= set(
        services
    )
    for name in ("ray-head", "ray-worker"):
        service = services[name]
        assert get(service, "build.dockerfile") == "deploy/Dockerfile"
        assert get(service, "build.args") == {"BASE": "python:3.11-slim", "EXTRA": "cpu"}
        environment = service["environment"]
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert environment["S3_ENDPOINT_URL"] == "http://minio:9000"
        # DATABASE_URL holds the database password: it comes from the env file, never the file
        assert "DATABASE_URL" not in environment
        assert [e["path"] for e in service["env_file"]] == ["./secrets/climate.env"]
    assert "--address=ray-head:6379" in " ".join(services["ray-worker"]["command"])
    gpu = services["ray-worker-gpu"]
    assert get(gpu, "build.args.EXTRA") == "gpu" and "cuda" in get(gpu, "build.args.BASE")
    assert (
        "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in services["prometheus"]["volumes"]
    )


def test_compose_secrets_are_files_never_values() -> None:
    compose = load_compose()
    assert secret_problems(compose) == []
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/"), name
    # the secrets directory is ignored by git
    assert "secrets/" in (DEPLOY / ".gitignore").read_text().split()


def test_broken_compose_with_a_secret_value_is_found() -> None:
    compose = load_compose()
    compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    assert secret_problems(compose)
    compose = load_compose()
    compose["services"]["ray-head"]["environment"]["DATABASE_URL"] = "postgresql://a:b@postgres/c"
    assert secret_problems(compose)


def test_images_are_built_the_same_way_everywhere() -> None:
    """CI builds the cpu and gpu images with the BASE and EXTRA the compose file uses."""
    services = load_compose()["services"]
    compose_builds = {
        get(s, "build.args.EXTRA"): get(s, "build.args.BASE")
        for s in services.values()
        if "build" in s
    }
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yaml").read_text())
    matrix = workflow["jobs"]["images"]["strategy"]["matrix"]["include"]
    assert {m["extra"]: m["base"] for m in matrix} == compose_builds
    assert f"--build-arg BASE={compose_builds['gpu']}" in DOCKERFILE.read_text()


def test_kubernetes_runs_ray_pods_as_the_images_user() -> None:
    """The pods' runAsUser is the image's numeric USER, whose $HOME they mount writable."""
    final_user = [
        i["value"]
        for i in DockerfileParser(str(DOCKERFILE)).structure
        if i["instruction"] == "USER"
    ][-1]
    uid = int(final_user.split(":")[0])
    assert "HOME=/home/climate" in DOCKERFILE.read_text()
    templates = [t for o in k8s_objects() for _, t in ray_pod_templates(o)]
    assert templates
    for template in templates:
        assert template["spec"]["securityContext"]["runAsUser"] == uid
        (container,) = template["spec"]["containers"]
        assert "/home/climate" in {m["mountPath"] for m in container["volumeMounts"]}
