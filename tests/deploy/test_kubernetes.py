"""Kubernetes manifests (deploy/k8s): the built-in kinds against Kubernetes' own schemas
(kubernetes-validate, strict), restricted pod security on every pod template, no secret values,
NetworkPolicies that let only the ingress controller reach Serve and only Ray pods reach the
stores, an Ingress with TLS to the RayService's Serve service."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    k8s_files,
    k8s_objects,
    load_documents,
    name_of,
    network_problems,
    pod_specs,
    ray_pod_templates,
    restricted_problems,
    secret_problems,
)

BUILTIN = [o for o in k8s_objects() if not o["apiVersion"].startswith("ray.io/")]


def by_name(kind: str, name: str) -> dict:
    (found,) = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return copy.deepcopy(found)


def k8s_problems(obj: dict) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name_of(obj)}: {exc}"]
    return []


def test_the_expected_objects_are_there() -> None:
    kinds = {o["kind"] for o in BUILTIN}
    assert {
        "Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Service", "StatefulSet",
        "Deployment", "Ingress", "NetworkPolicy",
    } <= kinds  # fmt: skip
    namespaced = [o for o in k8s_objects() if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"climate"}


@pytest.mark.parametrize("obj", BUILTIN, ids=name_of)
def test_builtin_kind_matches_kubernetes_schema(obj: dict) -> None:
    assert k8s_problems(obj) == []


def test_ray_pod_templates_match_kubernetes_podtemplate_schema() -> None:
    templates = [
        (name_of(o), path, template)
        for o in k8s_objects()
        for path, template in ray_pod_templates(o)
    ]
    assert len(templates) >= 7
    for owner, path, template in templates:
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": template,
        }
        assert k8s_problems(wrapped) == [], (owner, path)


def test_broken_builtin_copies_fail_kubernetes_schema() -> None:
    deployment = by_name("Deployment", "redis")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    assert k8s_problems(deployment)
    service = by_name("Service", "postgres")
    service["spec"]["ports"][0]["port"] = "five-four-three-two"
    assert k8s_problems(service)
    policy = by_name("NetworkPolicy", "postgres-from-ray")
    policy["spec"]["ingres"] = policy["spec"].pop("ingress")
    assert k8s_problems(policy)


def test_broken_ray_pod_template_fails_kubernetes_schema() -> None:
    (service,) = [o for o in k8s_objects() if o["kind"] == "RayService"]
    _, template = ray_pod_templates(copy.deepcopy(service))[0]
    template["spec"]["containers"][0]["volumeMount"] = []
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}}
    assert k8s_problems({**wrapped, "template": template})


# ---- pod security ----------------------------------------------------------------------------


def test_every_pod_template_is_restricted() -> None:
    objects = k8s_objects()
    pods = [(name_of(o), path) for o in objects for path, _ in pod_specs(o)]
    # RayService 3 groups, RayJob 2 + submitter, RayCronJob 3 + submitter, 3 stores
    assert len(pods) >= 13, pods
    problems = [p for o in objects for p in restricted_problems(o)]
    assert problems == []


def test_namespace_enforces_the_restricted_profile() -> None:
    labels = by_name("Namespace", "climate")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_ray_pods_write_only_to_volumes() -> None:
    """Ray needs /tmp (sessions, logs), /dev/shm (object store) and /app/output (stores)."""
    for obj in k8s_objects():
        for path, template in ray_pod_templates(obj):
            spec = template["spec"]
            volumes = {v["name"]: v for v in spec["volumes"]}
            (container,) = spec["containers"]
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert "emptyDir" in mounts["/tmp"], (name_of(obj), path)
            assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory", (name_of(obj), path)
            assert "persistentVolumeClaim" in mounts["/app/output"], (name_of(obj), path)


BROKEN_SECURITY = [
    ("readOnlyRootFilesystem", lambda pod: pod["containers"][0]["securityContext"].pop(
        "readOnlyRootFilesystem")),
    ("allowPrivilegeEscalation", lambda pod: pod["containers"][0]["securityContext"].update(
        allowPrivilegeEscalation=True)),
    ("drop ALL", lambda pod: pod["containers"][0]["securityContext"].update(capabilities={})),
    ("runAsNonRoot", lambda pod: pod["securityContext"].update(runAsNonRoot=False)),
    ("seccompProfile", lambda pod: pod["securityContext"].pop("seccompProfile")),
    ("/tmp", lambda pod: pod["containers"][0].update(volumeMounts=[])),
    ("hostPath", lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})),
]  # fmt: skip


@pytest.mark.parametrize(("what", "breaks"), BROKEN_SECURITY, ids=[b[0] for b in BROKEN_SECURITY])
def test_broken_pod_security_is_found(what: str, breaks: object) -> None:
    for obj in (by_name("StatefulSet", "postgres"), by_name("RayCronJob", "climate-nightly")):
        _, pod = pod_specs(obj)[-1]
        breaks(pod)  # type: ignore[operator]
        assert restricted_problems(obj), (what, name_of(obj))


def test_broken_autoscaler_sidecar_security_is_found() -> None:
    service = by_name("RayService", "climate-serve")
    del service["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
    assert any("autoscalerOptions" in p for p in restricted_problems(service))


# ---- secrets ------------------------------------------------------------------------------------


def test_no_manifest_holds_a_secret_value() -> None:
    problems = [
        p
        for path in k8s_files()
        for doc in load_documents(path)
        for p in secret_problems(doc, f"{path.name}: ")
    ]
    assert problems == []


def test_secrets_are_templates_with_empty_string_data() -> None:
    secrets = [o for o in k8s_objects() if o["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert "data" not in secret, name_of(secret)
        assert secret["stringData"] and set(secret["stringData"].values()) == {""}


def test_broken_copies_with_secret_values_are_found() -> None:
    secret = by_name("Secret", "climate-app")
    secret["stringData"]["DATABASE_URL"] = "postgresql+psycopg://climate:hunter2@db/climate"
    assert len(secret_problems(secret)) == 2  # the Secret's value, and a URL with a password
    redis = by_name("Deployment", "redis")
    env = redis["spec"]["template"]["spec"]["containers"][0]["env"]
    env[0] = {"name": "REDIS_PASSWORD", "value": "hunter2"}
    assert secret_problems(redis)
    minio = by_name("StatefulSet", "minio")
    minio["spec"]["template"]["spec"]["containers"][0]["args"].append("AKIAABCDEFGHIJKLMNOP")
    assert secret_problems(minio)


# ---- network ------------------------------------------------------------------------------------


def test_network_policies_guard_serve_and_the_stores() -> None:
    assert network_problems(k8s_objects()) == []


def test_ray_pods_carry_the_label_the_policies_select() -> None:
    templates = [t for o in k8s_objects() for _, t in ray_pod_templates(o)]
    assert templates
    for template in templates:
        assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "ray"


def allow(name: str, selector: dict, rule: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "climate"},
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [rule]},
    }


BROKEN_NETWORK = {
    "database open to all": allow(
        "open", {"matchLabels": {"app.kubernetes.io/name": "postgres"}}, {}
    ),
    "redis open to a namespace": allow(
        "ns",
        {"matchLabels": {"app.kubernetes.io/name": "redis"}},
        {"from": [{"namespaceSelector": {}}]},
    ),
    "serve open to monitoring": allow(
        "mon",
        {"matchLabels": {"app.kubernetes.io/component": "ray"}},
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}]},
    ),
    "serve open on 8000 to an ip block": allow(
        "ip",
        {"matchLabels": {"app.kubernetes.io/component": "ray"}},
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 8000}]},
    ),
}


@pytest.mark.parametrize("name", list(BROKEN_NETWORK))
def test_broken_network_policies_are_found(name: str) -> None:
    objects = [*k8s_objects(), BROKEN_NETWORK[name]]
    assert network_problems(objects), name


def test_missing_default_deny_is_found() -> None:
    objects = [o for o in k8s_objects() if o["metadata"]["name"] != "default-deny-ingress"]
    assert network_problems(objects)


# ---- ingress ------------------------------------------------------------------------------------


def test_ingress_serves_the_rayservice_over_tls() -> None:
    (ingress,) = [o for o in k8s_objects() if o["kind"] == "Ingress"]
    (service,) = [o for o in k8s_objects() if o["kind"] == "RayService"]
    spec = ingress["spec"]
    hosts = {rule["host"] for rule in spec["rules"]}
    tls_hosts = {host for tls in spec["tls"] for host in tls["hosts"]}
    assert hosts <= tls_hosts and all(tls["secretName"] for tls in spec["tls"])
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
    backends = [p["backend"]["service"] for r in spec["rules"] for p in r["http"]["paths"]]
    # KubeRay names the Serve Service of a RayService <name>-serve-svc, port 8000
    assert backends == [
        {"name": f"{service['metadata']['name']}-serve-svc", "port": {"number": 8000}}
    ]
