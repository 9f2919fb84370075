"""deploy/README.md, the operator's guide, names every deployment file and the KubeRay
requirement of the RayCronJob."""

from __future__ import annotations

import re

from tests.deploy.manifests import DEPLOY, K8S

GUIDE = DEPLOY / "README.md"


def test_guide_names_every_deployment_file() -> None:
    text = GUIDE.read_text()
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and "schemas" not in p.parts]
    missing = [
        str(p.relative_to(DEPLOY))
        for p in files
        if p != GUIDE and f"`{p.relative_to(K8S if K8S in p.parents else DEPLOY)}`" not in text
    ]
    assert missing == []


def test_guide_says_raycronjob_needs_kuberay_1_6_with_its_feature_gate() -> None:
    text = " ".join(GUIDE.read_text().split())
    assert re.search(
        r"RayCronJob`? needs KubeRay 1\.6 or later with its `?RayCronJob`? feature gate on", text
    )
    assert "--feature-gates=RayCronJob=true" in text
