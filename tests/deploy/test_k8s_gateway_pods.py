"""The gateway's pods in the Kubernetes manifests: workers scaled by KEDA on saturation,
waiting and batch lag, every replica count set in ``replicas.yaml`` only, pods given
longer to stop than their drain, probes and scrape annotations naming routes and ports the
app serves, and the Prometheus operator's monitors scraping the ports the pods expose."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from schemas import subjects
from tests.deploy.k8s_rendering import (
    APP_ROUTES,
    K8S,
    OVERLAYS,
    PROVIDERS,
    REPLICA_FIELDS,
    Rendering,
    is_gateway,
    pods_of,
    port_number,
    probes,
    render_overlays,  # noqa: F401 - the module's ``renderings`` fixture
    served_port,
)
from tests.deploy.metric_contract import label_names_in, labels_of, metric_names_in, series_names


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
