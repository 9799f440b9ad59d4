"""The Kubernetes manifests as a whole: every built-in object passes the Kubernetes schema
strictly, everything referenced is defined, every container is bounded and locked down,
every workload has a disruption budget, nothing is reachable from outside the cluster,
and the secrets are a template that commits no value, whose master key must be filled."""

from __future__ import annotations

import re

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from schemas.config import ConfigError, parse_config_text
from tests.deploy.k8s_rendering import (
    CRD_GROUPS,
    K8S,
    K8S_VERSION,
    OVERLAYS,
    Rendering,
    pods_of,
    probes,
    render_overlays,  # noqa: F401 - the module's ``renderings`` fixture
    selects,
)
from tests.deploy.tools import ROOT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_in_object_passes_the_kubernetes_schema_strictly(
        renderings: dict[str, Rendering], overlay: str) -> None:
    for obj in renderings[overlay].objects:
        if obj["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{overlay}: {obj['kind']} {obj['metadata']['name']}: {e.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_config_map_account_claim_and_service_referenced_is_defined(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    assert "$(PROMETHEUS_URL)" not in str(r.objects)
    assert "$(NATS_MONITORING_ENDPOINT)" not in str(r.objects)

    def keys(kind: str, name: str) -> set[str]:
        assert name in r.names(kind), f"{overlay}: {kind} {name} is not defined"
        return set(r.get(kind, name).get("data", {}))

    for workload in r.workloads():
        pod = workload["spec"]["template"]["spec"]
        where = f"{overlay}: {workload['kind']} {workload['metadata']['name']}"
        if "serviceAccountName" in pod:
            assert pod["serviceAccountName"] in r.names("ServiceAccount"), where
        if workload["kind"] == "StatefulSet":
            assert workload["spec"]["serviceName"] in r.names("Service"), where
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                keys("ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                keys("Secret", volume["secret"]["secretName"])
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in r.names(
                    "PersistentVolumeClaim"), where
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source["secretRef"]
                keys("ConfigMap" if "configMapRef" in source else "Secret", ref["name"])
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref or "configMapKeyRef" in ref:
                    kind = "Secret" if "secretKeyRef" in ref else "ConfigMap"
                    key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                    assert key_ref["key"] in keys(kind, key_ref["name"]), f"{where}: {var}"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, f"{where}: {mount}"
                volume = volumes.get(mount["name"], {})
                if "subPath" in mount and "configMap" in volume:
                    assert mount["subPath"] in keys("ConfigMap", volume["configMap"]["name"])
    for service in r.of("Service"):
        backends = pods_of(r, service["spec"]["selector"])
        assert backends, f"{overlay}: Service {service['metadata']['name']} selects no pod"
        ports = {p.get("name") for w in backends
                 for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in ports | {port["port"]}
    for hpa in r.of("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in r.names("Deployment")
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_resources_probes_and_a_locked_down_security_context(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    for workload, container in r.containers():
        where = f"{overlay}: {workload['metadata']['name']}/{container['name']}"
        pod = workload["spec"]["template"]["spec"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"].get(bound, {})), where
        assert set(probes(container)) == {"startupProbe", "livenessProbe", "readinessProbe"}, where
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert security.get("runAsNonRoot", pod["securityContext"].get("runAsNonRoot")), where
        assert security.get("runAsUser", pod["securityContext"].get("runAsUser", 0)) != 0, where
        tag = container["image"].rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{where}: image {container['image']} is not pinned"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_disruption_budget_selecting_its_pods(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    budgets = [b["spec"]["selector"]["matchLabels"] for b in r.of("PodDisruptionBudget")]
    for workload in r.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if selects(b, labels)]
        assert len(matching) == 1, f"{overlay}: {workload['metadata']['name']}: {matching}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_secret_template_commits_no_value_and_holds_every_key_the_manifests_read(
        renderings: dict[str, Rendering], overlay: str) -> None:
    example = (K8S / "secrets.env.example").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
    assert set(settings.values()) == {""}, "secrets.env.example must hold no value"
    assert "AIGW_MASTER_KEY" in settings
    r = renderings[overlay]
    for _, container in r.containers():
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in settings
    assert "secrets.env" in (K8S / ".gitignore").read_text().split()
    assert (K8S / "base" / "config.yaml").read_text() == (
        ROOT / "deploy" / "config.example.yaml").read_text(), "copy the example config again"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_is_reachable_from_outside_the_cluster(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    for service in r.of("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    for workload, container in r.containers():
        pod = workload["spec"]["template"]["spec"]
        assert not pod.get("hostNetwork"), workload["metadata"]["name"]
        assert not any("hostPort" in p for p in container.get("ports", [])), container["name"]


def test_an_unfilled_master_key_stops_the_gateway_instead_of_leaving_it_open() -> None:
    text = (K8S / "base" / "config.yaml").read_text()
    env = dict.fromkeys(re.findall(r"os\.environ/(\w+)", text), "test-value")
    assert parse_config_text(text, env, "config.yaml").master_key is not None
    with pytest.raises(ConfigError, match="master_key"):
        parse_config_text(text, {**env, "AIGW_MASTER_KEY": ""}, "config.yaml")
