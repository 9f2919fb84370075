"""Ray cluster launcher configs (cluster.yaml, deploy/cluster-onprem.yaml) checked offline with
Ray's own validator: ``prepare_config`` (merges the provider's defaults.yaml, the node-type
min/max, the setup-command lists; for AWS and the local provider it reads files only, which the
``offline`` fixture enforces) then ``validate_config`` (Ray's ray-schema.json, which refuses
unknown keys, and its cross-checks)."""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.deploy.manifests import DEPLOY, ROOT, secret_problems

CLOUD = ROOT / "cluster.yaml"
ONPREM = DEPLOY / "cluster-onprem.yaml"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No connection may be opened while Ray prepares a config (no cloud API is asked)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access during config preparation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def load(path: Any) -> dict:
    config: dict = yaml.safe_load(path.read_text())
    return config


def prepared(config: dict) -> dict:
    """Ray's own preparation and validation, as `ray up` does before touching a machine."""
    ready: dict = prepare_config(copy.deepcopy(config))
    validate_config(ready)
    return ready


def setup_commands(ready: dict) -> dict[str, str]:
    """The setup commands each node type of a prepared config runs, joined into one text."""
    out = {}
    for name, node_type in ready["available_node_types"].items():
        if name == ready["head_node_type"]:
            commands = ready["head_setup_commands"]
        else:
            commands = node_type.get("worker_setup_commands", ready["worker_setup_commands"])
        out[name] = "\n".join(commands)
    return out


def install_problems(ready: dict) -> list[str]:
    """The project is installed on every node: the gpu extra on GPU nodes, cpu elsewhere, with
    the Makefile's urllib3-future settings."""
    problems = []
    for name, text in setup_commands(ready).items():
        gpus = ready["available_node_types"][name]["resources"].get("GPU", 0)
        wanted, unwanted = ("'.[gpu]'", "'.[cpu]'") if gpus else ("'.[cpu]'", "'.[gpu]'")
        if f"-e {wanted}" not in text or unwanted in text:
            problems.append(f"{name}: does not install {wanted} alone")
        if "URLLIB3_NO_OVERRIDE=1" not in text or "--no-binary urllib3-future" not in text:
            problems.append(f"{name}: pip install without the Makefile's urllib3-future settings")
        if "~/.climate.env" not in text:
            problems.append(f"{name}: settings not loaded from SSM into ~/.climate.env")
    return problems


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("path", [CLOUD, ONPREM], ids=["cloud", "onprem"])
def test_ray_validates_the_launcher_config(path: Any) -> None:
    prepared(load(path))


@pytest.mark.usefixtures("offline")
def test_cloud_cluster_has_cpu_head_and_autoscaling_cpu_and_gpu_workers() -> None:
    ready = prepared(load(CLOUD))
    assert ready["provider"]["type"] == "aws"
    types = ready["available_node_types"]
    head = types[ready["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    workers = {n: t for n, t in types.items() if n != ready["head_node_type"]}
    cpu = [t for t in workers.values() if not t["resources"].get("GPU")]
    gpu = [t for t in workers.values() if t["resources"].get("GPU")]
    assert cpu and gpu
    for node_type in cpu + gpu:
        assert node_type["max_workers"] > node_type["min_workers"], "does not autoscale"
    assert sum(t["max_workers"] for t in workers.values()) >= ready["max_workers"]


@pytest.mark.usefixtures("offline")
def test_cloud_nodes_install_the_right_onnxruntime_build() -> None:
    assert install_problems(prepared(load(CLOUD))) == []


@pytest.mark.usefixtures("offline")
def test_broken_install_commands_are_found() -> None:
    config = load(CLOUD)
    gpu = config["available_node_types"]["gpu_forecast_serve"]
    gpu["worker_setup_commands"] = [
        c.replace(".[gpu]", ".[cpu]") for c in gpu["worker_setup_commands"]
    ]
    assert install_problems(prepared(config)) == [
        "gpu_forecast_serve: does not install '.[gpu]' alone"
    ]


@pytest.mark.usefixtures("offline")
def test_onprem_cluster_uses_the_local_provider_with_placeholders() -> None:
    config = load(ONPREM)
    provider = config["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"].startswith("192.0.2.")  # documentation range: placeholders
    assert provider["worker_ips"] and all(
        ip.startswith("192.0.2.") for ip in provider["worker_ips"]
    )
    text = "\n".join(prepared(config)["setup_commands"])
    assert "URLLIB3_NO_OVERRIDE=1" in text and "--no-binary urllib3-future" in text
    assert "extra=gpu" in text and "extra=cpu" in text and '-e ".[$extra]"' in text


def rename(dotted: str, new: str) -> Callable[[dict], None]:
    def apply(config: dict) -> None:
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[new] = node.pop(last)

    return apply


BROKEN = [
    (CLOUD, rename("head_node_type", "head_node_typ"), "head_node_typ"),
    (CLOUD, rename("available_node_types.cpu_ingest.max_workers", "max_worker"), "max_worker"),
    (CLOUD, rename("available_node_types.head.node_config", "node_confg"), "node_config"),
    (CLOUD, rename("idle_timeout_minutes", "idle_timeout_minute"), "idle_timeout_minute"),
    (ONPREM, rename("max_workers", "max_worker"), "max_worker"),
    (ONPREM, rename("auth.ssh_user", "ssh_usr"), "ssh_usr"),
]


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    ("path", "breaks", "named"), BROKEN, ids=[f"{p.name}-{n}" for p, _, n in BROKEN]
)
def test_broken_copy_fails_rays_validator(path: Any, breaks: Callable, named: str) -> None:
    config = load(path)
    breaks(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as failure:
        prepared(config)
    assert named in str(failure.value)


@pytest.mark.parametrize("path", [CLOUD, ONPREM], ids=["cloud", "onprem"])
def test_launcher_config_holds_no_secret(path: Any) -> None:
    assert secret_problems(load(path)) == []
    broken = load(path)
    broken["setup_commands"].append(
        "echo 'export DATABASE_URL=postgresql://u:pw@db/x' >> ~/.bashrc"
    )
    assert secret_problems(broken)
