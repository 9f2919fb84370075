"""The deployment files under test and the checks the tests share.

Every check here returns a list of problems (empty: the file passes) rather than asserting, so
each test can run it on the real file and on a deliberately broken copy that must fail.

``python -m tests.deploy.manifests sync-serve`` rewrites the RayService's ``serveConfigV2``
from ``configs/serve.yaml`` (its ``applications`` section, comments included).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
KUBERAY_SCHEMAS = SCHEMAS / "kuberay-v1.7.0"
RAYSERVICE = K8S / "40-rayservice.yaml"
SERVE_CONFIG = ROOT / "configs" / "serve.yaml"
NIGHTLY_CONFIG = ROOT / "configs" / "nightly.yaml"

# The Kubernetes version the built-in kinds are validated against (kubernetes-validate schemas).
KUBERNETES_VERSION = "1.33"

# Label every Ray pod template carries; the NetworkPolicies select Ray pods by it.
RAY_LABEL = ("app.kubernetes.io/component", "ray")

Obj = dict[str, Any]


def load_documents(path: Path) -> list[Obj]:
    """Every non-empty YAML document of a file."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def k8s_files() -> list[Path]:
    """Every manifest file under deploy/k8s (the ad hoc ones included)."""
    return sorted(K8S.rglob("*.yaml"))


def k8s_objects() -> list[Obj]:
    """Every Kubernetes object of deploy/k8s."""
    return [doc for path in k8s_files() for doc in load_documents(path)]


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# ---- JSON paths ---------------------------------------------------------------------------------


def walk(node: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    """Every (path, value) of a parsed document, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def get(node: Any, dotted: str, default: Any = None) -> Any:
    """``node['a']['b']`` for ``'a.b'``; ``default`` where a key is missing."""
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


# ---- KubeRay schemas ----------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A copy of a CRD schema that refuses unknown fields, as ``kubeconform -strict`` does.

    ``additionalProperties: false`` is set wherever ``properties`` is given and neither
    ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` is; nothing below a
    ``x-kubernetes-preserve-unknown-fields`` node is touched.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return copy.deepcopy(schema)
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


@cache
def kuberay_schema(kind: str) -> Obj:
    """The strict schema of a KubeRay kind (``RayService``, ``RayJob``, ...)."""
    raw = json.loads((KUBERAY_SCHEMAS / f"{kind.lower()}-v1.json").read_text())
    return strict(raw)


def kuberay_problems(obj: Obj) -> list[str]:
    """Schema errors of one KubeRay object against the strict v1.7.0 schema of its kind."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(kuberay_schema(obj["kind"]))
    return [
        f"{name_of(obj)} {error.json_path}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: e.json_path)
    ]


def embedded_cluster_specs(obj: Obj) -> list[tuple[str, Obj]]:
    """The RayCluster specs inside a RayService, RayJob or RayCronJob."""
    where = {
        "RayService": "spec.rayClusterConfig",
        "RayJob": "spec.rayClusterSpec",
        "RayCronJob": "spec.jobTemplate.rayClusterSpec",
    }.get(obj.get("kind", ""))
    spec = get(obj, where) if where else None
    return [(where, spec)] if isinstance(spec, dict) and where else []


# ---- pod security -------------------------------------------------------------------------------


def pod_specs(obj: Obj) -> list[tuple[str, Obj]]:
    """Every pod spec of an object (a dict holding ``containers``), wherever it is nested."""
    return [
        (path, node)
        for path, node in walk(obj)
        if isinstance(node, dict) and isinstance(node.get("containers"), list)
    ]


def _restricted_container_problems(where: str, context: Any) -> list[str]:
    if not isinstance(context, dict):
        return [f"{where}: no securityContext"]
    problems = []
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if context.get("privileged"):
        problems.append(f"{where}: privileged")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append(f"{where}: capabilities do not drop ALL")
    if capabilities.get("add"):
        problems.append(f"{where}: capabilities added {capabilities['add']}")
    if context.get("runAsNonRoot") is False or context.get("runAsUser") == 0:
        problems.append(f"{where}: may run as root")
    seccomp = get(context, "seccompProfile.type")
    if seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"{where}: seccompProfile {seccomp}")
    return problems


def restricted_problems(obj: Obj) -> list[str]:
    """Where an object's pods miss the restricted Pod Security settings this project requires.

    Every pod: runAsNonRoot, seccompProfile RuntimeDefault, no host namespaces or hostPath.
    Every container (init containers and KubeRay's autoscaler sidecar included):
    allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL, not
    privileged, not uid 0, and an emptyDir at /tmp for what it writes.
    """
    problems: list[str] = []
    for path, pod in pod_specs(obj):
        where = f"{name_of(obj)} {path}"
        pod_context = pod.get("securityContext") or {}
        if pod_context.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
        if pod_context.get("runAsUser") == 0:
            problems.append(f"{where}: pod runs as uid 0")
        if get(pod_context, "seccompProfile.type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                problems.append(f"{where}: {flag}")
        volumes = {volume.get("name"): volume for volume in pod.get("volumes") or []}
        problems += [
            f"{where}: hostPath volume {name}" for name, v in volumes.items() if "hostPath" in v
        ]
        for group in ("initContainers", "containers"):
            for container in pod.get(group) or []:
                cwhere = f"{where}.{group}[{container.get('name')}]"
                problems += _restricted_container_problems(cwhere, container.get("securityContext"))
                mounts = {
                    m.get("mountPath"): m.get("name") for m in container.get("volumeMounts") or []
                }
                tmp = volumes.get(mounts.get("/tmp"), {})
                if "emptyDir" not in tmp:
                    problems.append(f"{cwhere}: no emptyDir mounted at /tmp")
    autoscaler = [
        (path, node)
        for path, node in walk(obj)
        if path.endswith(".autoscalerOptions") and isinstance(node, dict)
    ]
    for path, options in autoscaler:
        problems += _restricted_container_problems(
            f"{name_of(obj)} {path}", options.get("securityContext")
        )
    return problems


def ray_pod_templates(obj: Obj) -> list[tuple[str, Obj]]:
    """(path, pod template) of every Ray node group of a KubeRay object."""
    templates = []
    for where, spec in embedded_cluster_specs(obj):
        templates.append((f"{where}.headGroupSpec", spec["headGroupSpec"]["template"]))
        for group in spec.get("workerGroupSpecs") or []:
            templates.append((f"{where}.workerGroupSpecs[{group['groupName']}]", group["template"]))
    return templates


# ---- secrets ------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|API_KEY|_URL$")
SECRET_TEXT = [
    (re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"$]+@"), "a URL with a password"),
    (re.compile(r"\bA(KIA|SIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), "a GitHub token"),
]
PLACEHOLDERS = {"", "REPLACE_ME"}


def _literal_secret(name: str, value: Any) -> bool:
    """A variable whose name says secret and whose value is given literally."""
    if not SECRET_NAME.search(name.upper()) or name.upper().endswith("_FILE"):
        return False
    text = str(value).strip() if value is not None else ""
    if text in PLACEHOLDERS or text.startswith("$"):
        return False
    # non-secret URLs of this project's settings: no credentials in them
    return not (name.upper().endswith("_URL") and "@" not in text)


def secret_problems(obj: Any, where: str = "") -> list[str]:
    """Secret values held in a parsed file (a manifest, a compose file, a launcher config).

    Refused: a Kubernetes Secret whose ``data``/``stringData`` holds anything but an empty or
    ``REPLACE_ME`` placeholder; an environment variable named like a secret
    (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, ``*ACCESS_KEY*``, ``*_URL`` with credentials)
    with a literal value instead of a reference (``valueFrom``, ``*_FILE``, ``$VAR``); and
    anywhere, text that looks like a credential (a URL with a password, an AWS key id, a
    private key, a GitHub token).
    """
    problems: list[str] = []
    if isinstance(obj, dict) and obj.get("kind") == "Secret":
        for field in ("data", "stringData"):
            for key, value in (obj.get(field) or {}).items():
                if str(value) not in PLACEHOLDERS:
                    problems.append(f"{where}{name_of(obj)} {field}.{key} holds a value")
    for path, node in walk(obj):
        if isinstance(node, dict):
            named = isinstance(node.get("name"), str) and "valueFrom" not in node
            if named and "value" in node and _literal_secret(node["name"], node["value"]):
                problems.append(f"{where}{path}: {node['name']} set literally")
            if path.endswith((".environment", ".env")):
                problems += [
                    f"{where}{path}.{key}: set literally"
                    for key, value in node.items()
                    if _literal_secret(str(key), value)
                ]
        elif isinstance(node, str):
            problems += [
                f"{where}{path}: {what}" for pattern, what in SECRET_TEXT if pattern.search(node)
            ]
    return problems


# ---- network policies ---------------------------------------------------------------------------


def _matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels / matchExpressions In, Exists) selects labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def ingress_peers(policies: list[Obj], labels: dict[str, str], port: int) -> list[Obj]:
    """The ``from`` peers that the policies let reach pods with these labels on this TCP port.

    A rule without ``from`` allows every source: it is returned as ``{"any": True}``.
    """
    peers: list[Obj] = []
    for policy in policies:
        spec = policy["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            continue
        if not _matches(spec.get("podSelector"), labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(
                p.get("protocol", "TCP") == "TCP"
                and (
                    p.get("port") is None
                    or p.get("port") == port
                    or (isinstance(p.get("port"), int) and p["port"] <= port <= p.get("endPort", 0))
                )
                for p in ports
            ):
                continue
            peers += rule.get("from") or [{"any": True}]
    return peers


def is_ray_peer(peer: Obj) -> bool:
    """A peer that is exactly the Ray pods of this namespace."""
    return set(peer) == {"podSelector"} and _matches(peer["podSelector"], dict([RAY_LABEL]))


def is_ingress_controller_peer(peer: Obj) -> bool:
    """A peer that is the ingress controller's pods in its own namespace."""
    namespace = get(peer, "namespaceSelector.matchLabels", {})
    pods = get(peer, "podSelector.matchLabels", {})
    return (
        set(peer) == {"namespaceSelector", "podSelector"}
        and namespace.get("kubernetes.io/metadata.name") == "ingress-nginx"
        and pods.get("app.kubernetes.io/name") == "ingress-nginx"
    )


def network_problems(objects: list[Obj]) -> list[str]:
    """Where the NetworkPolicies let more in than this project allows.

    Default deny of ingress for the namespace; Serve (port 8000 of the Ray pods) reached by the
    ingress controller and the Ray pods only; PostgreSQL, Redis and MinIO by the Ray pods only.
    """
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    problems = []
    deny = [
        p
        for p in policies
        if p["spec"].get("podSelector") == {}
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
    ]
    if not deny:
        problems.append("no default-deny ingress policy (podSelector {}, no ingress rules)")
    for peer in ingress_peers(policies, dict([RAY_LABEL]), 8000):
        if not (is_ray_peer(peer) or is_ingress_controller_peer(peer)):
            problems.append(f"Serve (Ray pods, port 8000) reachable from {peer}")
    stores = {"postgres": 5432, "redis": 6379, "minio": 9000}
    workloads = [o for o in objects if o.get("kind") in ("StatefulSet", "Deployment")]
    for workload in workloads:
        labels = get(workload, "spec.template.metadata.labels", {})
        name = labels.get("app.kubernetes.io/name")
        if name not in stores:
            continue
        peers = ingress_peers(policies, labels, stores[name])
        if not peers:
            problems.append(f"{name}: no policy lets the Ray pods in")
        problems += [
            f"{name} (port {stores[name]}) reachable from {peer}"
            for peer in peers
            if not is_ray_peer(peer)
        ]
    return problems


# ---- serveConfigV2 ------------------------------------------------------------------------------


def serve_applications() -> list[Obj]:
    """``applications`` of configs/serve.yaml."""
    applications: list[Obj] = yaml.safe_load(SERVE_CONFIG.read_text())["applications"]
    return applications


def sync_serve_config() -> bool:
    """Rewrite the RayService's serveConfigV2 from configs/serve.yaml; True if it changed."""
    serve_text = SERVE_CONFIG.read_text()
    applications = serve_text[serve_text.index("\napplications:") + 1 :].rstrip("\n")
    manifest = RAYSERVICE.read_text()
    pattern = re.compile(r"(  serveConfigV2: \|\n)(?:    .*\n|\n)*?(?=  rayClusterConfig:)")
    block = "".join(f"    {line}\n" if line else "\n" for line in applications.split("\n"))
    updated, count = pattern.subn(lambda m: m.group(1) + block, manifest)
    if count != 1:
        raise SystemExit(f"{RAYSERVICE}: serveConfigV2 block not found")
    if updated == manifest:
        return False
    RAYSERVICE.write_text(updated)
    return True


if __name__ == "__main__":
    if sys.argv[1:] != ["sync-serve"]:
        raise SystemExit("usage: python -m tests.deploy.manifests sync-serve")
    print("updated" if sync_serve_config() else "already in sync", RAYSERVICE.relative_to(ROOT))
