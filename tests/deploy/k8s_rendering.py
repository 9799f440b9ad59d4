"""The Kubernetes manifests as the k8s tests read them: each overlay rendered with
``kubectl kustomize`` (a ``Rendering`` to look objects up in, and the environment each
container gets), and what the tests ask of a workload: which pods a selector picks,
which containers run the gateway, and the ports and probes they serve.

The fixture ``renderings`` is module-scoped: a test module that imports
``render_overlays`` renders the overlays once for itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import ROOT, require

Obj = dict[str, Any]

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("with-deps", "external")
PROVIDERS = ("openai", "anthropic", "gemini")
K8S_VERSION = "1.32"
# Kinds without a schema in kubernetes-validate; checked field by field below.
CRD_GROUPS = ("keda.sh", "monitoring.coreos.com")
GATEWAY_IMAGE = "ai-gateway"
# Routes the gateway serves (ingress on AIGW_PORT, the others on AIGW_METRICS_PORT): by hand
# while the packages move; to be built from ingress.app.create_app's routes.
APP_ROUTES = frozenset({"/health/liveliness", "/health/readiness", "/metrics"})
# Fields that only replicas.yaml may set on the gateway's objects.
REPLICA_FIELDS = ("replicas", "minReplicas", "maxReplicas", "minReplicaCount", "maxReplicaCount")


@dataclass(frozen=True)
class Rendering:
    objects: list[Obj]

    def of(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of(kind)}

    def get(self, kind: str, name: str) -> Obj:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name}: {len(found)} in the rendering"
        return found[0]

    def workloads(self) -> list[Obj]:
        return self.of("Deployment") + self.of("StatefulSet")

    def containers(self) -> Iterator[tuple[Obj, Obj]]:
        """(workload, container) for every container of every pod template."""
        for workload in self.workloads():
            for container in workload["spec"]["template"]["spec"]["containers"]:
                yield workload, container

    def env(self, container: Obj) -> dict[str, str]:
        """What the container's environment holds (Secret values stay hidden)."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
            else:
                secret = self.get("Secret", source["secretRef"]["name"])
                env.update(dict.fromkeys(secret.get("data", {}), "<secret>"))
        for var in container.get("env", []):
            env[var["name"]] = var.get("value", "<ref>")
        return env


def render(directory: Path) -> Rendering:
    kubectl = require("kubectl", "the Kubernetes manifests")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return Rendering([o for o in yaml.safe_load_all(done.stdout) if o])


@pytest.fixture(scope="module", name="renderings")
def render_overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendering]:
    """Each overlay rendered from a copy with test values in secrets.env (never yours)."""
    require("kubectl", "the Kubernetes manifests")
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
    example = (K8S / "secrets.env.example").read_text()
    filled = re.sub(r"^([A-Z_]+)=$", r"\1=test-value", example, flags=re.MULTILINE)
    for overlay in OVERLAYS:
        (tree / "overlays" / overlay / "secrets.env").write_text(filled)
    out = {overlay: render(tree / "overlays" / overlay) for overlay in OVERLAYS}
    out["prometheus-operator"] = render(tree / "prometheus-operator")
    return out


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pods_of(r: Rendering, selector: dict[str, str]) -> list[Obj]:
    return [w for w in r.workloads()
            if selects(selector, w["spec"]["template"]["metadata"]["labels"])]


def is_gateway(container: Obj) -> bool:
    return str(container["image"]).split(":")[0].rsplit("/", 1)[-1] == GATEWAY_IMAGE


def served_port(r: Rendering, container: Obj) -> int:
    """The port the gateway process serves its routes on, from its own environment."""
    env = r.env(container)
    return int(env["AIGW_PORT"] if container["args"][0] == "ingress" else env["AIGW_METRICS_PORT"])


def port_number(container: Obj, port: int | str) -> int:
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    return port if isinstance(port, int) else named[port]


def probes(container: Obj) -> dict[str, Obj]:
    return {k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")
            if k in container}
