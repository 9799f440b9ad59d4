"""The Kubernetes manifests: every overlay renders, validates, and each part finds the others."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from cli.bus_config import authorization
from schemas import subjects
from schemas.bus_roles import ROLES
from schemas.config import ConfigError, parse_config_text
from tests.deploy.metric_contract import label_names_in, labels_of, metric_names_in, series_names
from tests.deploy.tools import ROOT, nats_server, require

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


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendering]:
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
def test_each_provider_has_workers_scaled_by_keda_on_saturation_waiting_and_batch_lag(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in r.of("ScaledObject")}
    workers = {d["metadata"]["name"] for d in r.of("Deployment")
               if d["spec"]["template"]["spec"]["containers"][0].get("args", [""])[0] == "worker"}
    assert set(scaled) == workers == {f"aigw-worker-{p}" for p in PROVIDERS}
    for provider in PROVIDERS:
        worker = r.get("Deployment", f"aigw-worker-{provider}")
        assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "worker", "--provider", provider]
        assert "replicas" not in worker["spec"], "KEDA owns the count"
        so = scaled[f"aigw-worker-{provider}"]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        triggers = so["spec"]["triggers"]
        assert sorted(t["type"] for t in triggers) == ["nats-jetstream", "prometheus", "prometheus"]
        queries = []
        for trigger in triggers:
            meta = trigger["metadata"]
            assert trigger.get("metricType", "AverageValue") in ("Value", "AverageValue")
            if trigger["type"] == "prometheus":
                assert set(meta) == {"serverAddress", "query", "threshold"}
                assert urlparse(meta["serverAddress"]).scheme in ("http", "https")
                assert float(meta["threshold"]) > 0
                assert f'gen_ai_provider_name="{provider}"' in meta["query"]
                selected = metric_names_in(meta["query"])
                assert selected <= series_names(), meta["query"]
                assert label_names_in(meta["query"]) <= labels_of(selected), meta["query"]
                queries.append(meta["query"])
            else:
                assert meta["account"] == "$G"
                assert meta["stream"] == subjects.BATCH_STREAM
                assert meta["consumer"] == subjects.batch_consumer(provider)
                assert int(meta["lagThreshold"]) > 0
                assert re.fullmatch(r"[a-z0-9.-]+:\d+", meta["natsServerMonitoringEndpoint"])
        assert any("aigw_worker_inflight" in q and "aigw_worker_capacity" in q for q in queries)
        assert any("aigw_dispatch_waiting" in q for q in queries)


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
def test_gateway_pods_are_given_longer_to_stop_than_their_drain(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    gateway = [(w, c) for w, c in r.containers() if is_gateway(c)]
    assert len(gateway) == 2 + len(PROVIDERS)
    for workload, container in gateway:
        drain = float(r.env(container)["AIGW_DRAIN_SECONDS"])
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > drain, f"{workload['metadata']['name']}: {grace} s <= drain {drain} s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_probes_and_scrape_annotations_name_routes_and_ports_the_app_serves(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    for workload, container in r.containers():
        if not is_gateway(container):
            continue
        where = f"{overlay}: {workload['metadata']['name']}"
        env, port = r.env(container), served_port(r, container)
        assert env["AIGW_LOG_FORMAT"] == "json", where
        assert {"NATS_URL", "AIGW_CONFIG", "AIGW_MASTER_KEY"} <= set(env), where
        assert port in {p["containerPort"] for p in container["ports"]}, where
        for name, probe in probes(container).items():
            get = probe["httpGet"]
            assert get["path"].partition("?")[0] in APP_ROUTES, f"{where} {name}"
            assert port_number(container, get["port"]) == port, f"{where} {name}"
        notes = workload["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true", where
        assert int(notes["prometheus.io/port"]) == port, where
        assert notes["prometheus.io/path"] in APP_ROUTES, where
    ingress = r.get("Deployment", "aigw-ingress")["spec"]["template"]["spec"]
    assert ingress["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health/liveliness"


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


def test_every_replica_count_of_the_gateway_is_set_in_replicas_yaml_only() -> None:
    def set_fields(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in REPLICA_FIELDS:
                    yield key
                yield from set_fields(value)
        elif isinstance(node, list):
            for item in node:
                yield from set_fields(item)

    base = K8S / "base"
    for path in sorted(base.rglob("*.yaml")):
        if path.name in ("replicas.yaml", "kustomization.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert not list(set_fields(doc or {})), f"{path.relative_to(K8S)}: use replicas.yaml"
    patches = yaml.safe_load_all((base / "replicas.yaml").read_text())
    patched = {d["metadata"]["name"] for d in patches}
    assert patched == {"aigw-ingress", "aigw-accounting"} | {f"aigw-worker-{p}" for p in PROVIDERS}


def test_with_deps_runs_a_three_node_jetstream_cluster_with_the_compose_payload_limit(
        renderings: dict[str, Rendering], tmp_path: Path) -> None:
    r = renderings["with-deps"]
    nats = r.get("StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = r.get("Service", nats["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    conf = r.get("ConfigMap", nats["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"])
    text = conf["data"]["nats.conf"]
    compose = (ROOT / "deploy" / "nats" / "nats.conf").read_text()
    payload = re.compile(r"^max_payload:\s*(\S+)", re.MULTILINE)
    assert payload.findall(text) == payload.findall(compose) == ["8MB"]
    routes = re.findall(r"nats://(nats-\d)\.nats:6222", text)
    assert routes == [f"nats-{i}" for i in range(3)]
    ingress = r.get("Deployment", "aigw-ingress")["spec"]["template"]["spec"]["containers"][0]
    env = r.env(ingress)
    assert env["AIGW_JS_REPLICAS"] == "3"
    assert env["NATS_URL"].split(",") == [f"nats://{n}.nats:4222" for n in routes]
    namespace = service["metadata"]["namespace"]
    for so in r.of("ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            endpoint = trigger["metadata"].get("natsServerMonitoringEndpoint")
            assert endpoint in (None, f"nats.{namespace}.svc.cluster.local:8222")
    accounting = r.get("Deployment", "aigw-accounting")["spec"]["template"]["spec"]
    env_list = [v["name"] for v in accounting["containers"][0]["env"]]
    assert env_list.index("CLICKHOUSE_PASSWORD") < env_list.index("CLICKHOUSE_URL")
    binary = nats_server()
    if binary is None:
        pytest.skip("nats-server is not installed, so the cluster config is not parsed")
    (tmp_path / "nats.conf").write_text(text)
    (tmp_path / "authorization.conf").write_text(conf["data"]["authorization.conf"])
    passwords = {f"AIGW_NATS_{role.upper()}_PASSWORD": "test1value" for role in ROLES}
    checked = subprocess.run([binary, "-t", "-c", str(tmp_path / "nats.conf")], text=True,
                             capture_output=True, timeout=30, check=False,
                             env={**os.environ, "POD_NAME": "nats-0", **passwords})
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_with_deps_nats_lets_in_each_gateway_role_with_its_own_password_only(
        renderings: dict[str, Rendering]) -> None:
    r = renderings["with-deps"]
    nats = r.get("StatefulSet", "nats")["spec"]["template"]["spec"]
    conf = r.get("ConfigMap", nats["volumes"][0]["configMap"]["name"])["data"]
    assert conf["authorization.conf"] == authorization()
    assert "include ./authorization.conf" in conf["nats.conf"]
    given = {v["name"]: v["valueFrom"]["secretKeyRef"]["key"]
             for v in nats["containers"][0]["env"] if "secretKeyRef" in v.get("valueFrom", {})}
    variables = {f"AIGW_NATS_{role.upper()}_PASSWORD" for role in ROLES}
    assert given == {v: v for v in variables}
    # An empty password lets anyone in as that role: the container refuses to start.
    command = nats["containers"][0]["command"]
    assert command[:2] == ["sh", "-ec"]
    script = command[2].replace("exec nats-server", "exec echo nats-server")
    filled = dict.fromkeys(variables, "test1value")
    ran = subprocess.run(["sh", "-ec", script], env={"PATH": os.environ["PATH"], **filled},
                         capture_output=True, text=True, timeout=30, check=False)
    assert ran.stdout.strip() == "nats-server --config /etc/nats/nats.conf", ran.stderr
    for variable in variables:
        ran = subprocess.run(["sh", "-ec", script], capture_output=True, text=True, timeout=30,
                             env={"PATH": os.environ["PATH"], **filled, variable: ""},
                             check=False)
        assert ran.returncode != 0 and variable in ran.stderr, variable


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_gateway_process_logs_in_to_nats_as_its_own_role(
        renderings: dict[str, Rendering], overlay: str) -> None:
    r = renderings[overlay]
    for workload, container in r.containers():
        if not is_gateway(container):
            continue
        role = container["args"][0]
        env = {v["name"]: v for v in container["env"]}
        where = f"{overlay}: {workload['metadata']['name']}"
        assert env["AIGW_NATS_USER"]["value"] == role, where
        ref = env["AIGW_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == f"AIGW_NATS_{role.upper()}_PASSWORD", where
        assert ref["key"] in r.get("Secret", ref["name"])["data"], where


def test_the_prometheus_operator_monitors_scrape_gateway_pods_on_ports_they_expose(
        renderings: dict[str, Rendering]) -> None:
    monitors = renderings["prometheus-operator"].of("PodMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        "aigw-ingress", "aigw-worker", "aigw-accounting"}
    for overlay in OVERLAYS:
        r = renderings[overlay]
        for monitor in monitors:
            assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
            pods = pods_of(r, monitor["spec"]["selector"]["matchLabels"])
            assert pods, f"{monitor['metadata']['name']} selects no pod in {overlay}"
            for workload in pods:
                labels = workload["spec"]["template"]["metadata"]["labels"]
                assert labels[monitor["spec"]["jobLabel"]] == monitor["metadata"]["name"]
                container = workload["spec"]["template"]["spec"]["containers"][0]
                for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                    assert endpoint["path"] in APP_ROUTES
                    assert port_number(container, endpoint["port"]) == served_port(r, container)
