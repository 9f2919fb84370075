"""KubeRay manifests (deploy/k8s): strict v1.7.0 schemas, Serve's own config schema, the sync
of serveConfigV2 with configs/serve.yaml and of the RayCronJob with configs/nightly.yaml."""

from __future__ import annotations

import copy
import hashlib

import pytest
import ray
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from schemas.serve_config import ServeFile
from tests.deploy.manifests import (
    KUBERAY_SCHEMAS,
    NIGHTLY_CONFIG,
    ROOT,
    embedded_cluster_specs,
    get,
    k8s_objects,
    kuberay_problems,
    name_of,
    ray_pod_templates,
    serve_applications,
    strict,
)

KINDS = ("RayService", "RayJob", "RayCronJob")


def kuberay_objects() -> list[dict]:
    return [o for o in k8s_objects() if o.get("apiVersion") == "ray.io/v1"]


def one(kind: str) -> dict:
    (found,) = [o for o in kuberay_objects() if o["kind"] == kind]
    return copy.deepcopy(found)


def test_each_kind_is_deployed_once() -> None:
    assert sorted(o["kind"] for o in kuberay_objects()) == sorted(KINDS)


def test_vendored_schemas_are_the_kuberay_v1_7_0_ones() -> None:
    readme = (KUBERAY_SCHEMAS / "README.md").read_text()
    for kind in ("raycluster", "rayjob", "rayservice", "raycronjob"):
        digest = hashlib.sha256((KUBERAY_SCHEMAS / f"{kind}-v1.json").read_bytes()).hexdigest()
        assert f"| {kind}-v1.json | {digest} |" in readme


def test_strict_closes_objects_but_not_preserved_ones() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "free": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"c": {"type": "object", "properties": {}}},
            },
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    closed = strict(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]["free"]
    assert "additionalProperties" not in closed["properties"]["free"]["properties"]["c"]
    assert closed["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema  # the input is left alone


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_matches_the_strict_kuberay_schema(kind: str) -> None:
    assert kuberay_problems(one(kind)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_embedded_cluster_specs_are_valid_rayclusters(kind: str) -> None:
    obj = one(kind)
    specs = embedded_cluster_specs(obj)
    assert specs, f"{kind}: no Ray cluster spec found"
    for _, spec in specs:
        cluster = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": obj["metadata"]["name"]},
            "spec": spec,
        }
        assert kuberay_problems(cluster) == []


BROKEN = [
    ("RayJob", "spek", {}, "spek"),
    ("RayService", "spec.rayClusterConfig.enableInTreeAutoscalng", True, "enableInTreeAutoscalng"),
    ("RayService", "spec.serveConfigV2", {"applications": []}, "serveConfigV2"),
    ("RayJob", "spec.shutdownAfterJobFinish", True, "shutdownAfterJobFinish"),
    ("RayCronJob", "spec.schedul", "0 1 * * *", "schedul"),
    ("RayCronJob", "spec.jobTemplate.entrypointt", "python -V", "entrypointt"),
]


@pytest.mark.parametrize(("kind", "dotted", "value", "named"), BROKEN)
def test_broken_copy_fails_the_schema(kind: str, dotted: str, value: object, named: str) -> None:
    obj = one(kind)
    *parents, last = dotted.split(".")
    node = obj
    for key in parents:
        node = node[key]
    node[last] = value
    problems = kuberay_problems(obj)
    assert any(named in problem for problem in problems), problems


def test_broken_pod_template_deep_inside_fails_the_schema() -> None:
    """Strictness reaches the pod templates: a misspelled container field is refused."""
    obj = one("RayCronJob")
    head = obj["spec"]["jobTemplate"]["rayClusterSpec"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["securityContex"] = {}
    problems = kuberay_problems(obj)
    assert any("securityContex" in problem for problem in problems), problems


# ---- serveConfigV2 ------------------------------------------------------------------------------


def serve_config_v2() -> dict:
    return yaml.safe_load(one("RayService")["spec"]["serveConfigV2"])


def test_serve_config_v2_is_configs_serve_yaml() -> None:
    assert serve_config_v2()["applications"] == serve_applications(), (
        "deploy/k8s/40-rayservice.yaml's serveConfigV2 differs from configs/serve.yaml's "
        "applications: run `python -m tests.deploy.manifests sync-serve`"
    )


def test_serve_config_v2_passes_serves_own_deploy_schema() -> None:
    config = ServeDeploySchema.model_validate(serve_config_v2())
    assert [app.import_path for app in config.applications] == ["serve.app:build_app"]
    # Serve's default for a config deployed by KubeRay: the proxies listen on every interface
    assert config.http_options.host == "0.0.0.0"


def test_serve_config_v2_passes_the_projects_strict_schema() -> None:
    ServeFile.model_validate(serve_config_v2())


def test_broken_serve_config_fails_serves_schema() -> None:
    broken = serve_config_v2()
    broken["applications"][0]["import_pat"] = broken["applications"][0].pop("import_path")
    with pytest.raises(ValidationError, match="import_path"):
        ServeDeploySchema.model_validate(broken)


def test_serve_and_ray_workers_autoscale() -> None:
    service = one("RayService")
    for app in serve_config_v2()["applications"]:
        for deployment in ("ingress", "predictor"):
            scaling = app["args"][deployment]["autoscaling"]
            assert scaling["max_replicas"] > scaling["min_replicas"], (app["name"], deployment)
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert group["maxReplicas"] > group["minReplicas"], group["groupName"]


# ---- jobs ---------------------------------------------------------------------------------------


def test_raycronjob_runs_the_nightly_on_its_configured_schedule() -> None:
    schedule = yaml.safe_load(NIGHTLY_CONFIG.read_text())["schedule"]
    cron = one("RayCronJob")["spec"]
    assert cron["schedule"] == schedule["cron"]
    assert cron["timeZone"] == schedule["timezone"]
    assert len(cron["schedule"].split()) == 5, "Kubernetes cron has no seconds field"
    assert cron["jobTemplate"]["entrypoint"].split() == [
        "python", "-m", "jobs.nightly", "--config", "configs/nightly.yaml",
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ("RayJob", "RayCronJob"))
def test_job_entrypoints_name_shipped_configs_and_clean_up(kind: str) -> None:
    obj = one(kind)
    spec = obj["spec"].get("jobTemplate", obj["spec"])
    words = spec["entrypoint"].split()
    assert words[:3] == ["python", "-m", words[2]] and words[2].startswith("jobs.")
    config = words[words.index("--config") + 1]
    assert (ROOT / config).is_file(), config
    assert spec["shutdownAfterJobFinishes"] is True
    assert get(spec, "submitterPodTemplate.spec.restartPolicy") == "Never"


def test_ray_pods_run_the_projects_image_of_the_right_build() -> None:
    """GPU groups run the gpu image (onnxruntime-gpu), every other Ray pod the cpu image."""
    for obj in kuberay_objects():
        for _, spec in embedded_cluster_specs(obj):
            assert spec["rayVersion"] == ray.__version__, name_of(obj)
        for path, template in ray_pod_templates(obj):
            (container,) = template["spec"]["containers"]
            gpus = get(container, "resources.limits", {}).get("nvidia.com/gpu")
            wanted = "-gpu" if gpus else "-cpu"
            assert container["image"].endswith(wanted), (name_of(obj), path, container["image"])
            assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "ray"
