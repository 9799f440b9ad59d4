"""NATS in the Kubernetes manifests: ``with-deps`` runs a three-node JetStream cluster with
the compose payload limit (its config parsed by ``nats-server -t`` when installed), lets
in each gateway role with its own password only, and each gateway process logs in as its
own role."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cli.bus_config import authorization
from schemas.bus_roles import ROLES
from tests.deploy.k8s_rendering import (
    OVERLAYS,
    Rendering,
    is_gateway,
    render_overlays,  # noqa: F401 - the module's ``renderings`` fixture
)
from tests.deploy.tools import ROOT, nats_server


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
