"""docker-compose.yml and deploy/Dockerfile: valid, pinned, healthy, private by default."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import ROOT, compose_command

Obj = dict[str, Any]

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROVIDERS = ("openai", "anthropic", "gemini")
NATS_PASSWORDS = ("AIGW_NATS_INGRESS_PASSWORD", "AIGW_NATS_WORKER_PASSWORD",
                  "AIGW_NATS_ACCOUNTING_PASSWORD")
REQUIRED = ("AIGW_MASTER_KEY", "CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD", *NATS_PASSWORDS)
# The routes the gateway serves (see tests/deploy/k8s_rendering.py): listed by hand while the
# packages move.
APP_ROUTES = frozenset({"/health/liveliness", "/health/readiness", "/metrics"})
PACKAGES = ("schemas", "core", "ingress", "workers", "accounting", "cli")
HEALTH_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s?]*)")


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with only ``env_file`` for variables (not your shell's)."""
    command = [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE), "config"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          cwd=ROOT, env={"PATH": "/usr/local/bin:/usr/bin:/bin",
                                         "HOME": str(env_file.parent)})


def env_file(tmp: Path, **values: str) -> Path:
    """.env.example with the given values filled in."""
    text = ENV_EXAMPLE.read_text()
    for name, value in values.items():
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
    path = tmp / ".env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Obj]:
    path = env_file(tmp_path_factory.mktemp("compose"), **dict.fromkeys(REQUIRED, "test-value"))
    done = compose_config(path)
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Obj] = yaml.safe_load(done.stdout)["services"]
    return rendered


def gateway(services: dict[str, Obj]) -> dict[str, Obj]:
    return {name: s for name, s in services.items() if "build" in s}


def published(service: Obj) -> list[tuple[str, str, int]]:
    """(host address, host port, container port) of each published port, in either the short
    syntax docker-compose 1.x prints or the long one of compose v2."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", "")),
                        int(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            host = parts[0] if len(parts) == 3 else ""
            out.append((host, parts[-2] if len(parts) > 1 else "", int(parts[-1])))
    return out


def health_url(service: Obj) -> tuple[int, str]:
    test = " ".join(service["healthcheck"]["test"])
    found = HEALTH_URL.search(test)
    assert found, test
    return int(found.group(1)), found.group(2)


def test_the_compose_file_is_valid_with_a_dot_env_made_from_the_example(
        services: dict[str, Obj]) -> None:
    assert {"nats", "redis", "clickhouse", "prometheus", "grafana", "ingress", "accounting"} | {
        f"worker-{p}" for p in PROVIDERS} <= set(services)


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_refuses_to_start_without_each_secret_and_has_no_default_for_it(
        tmp_path: Path, missing: str) -> None:
    given = {name: "test-value" for name in REQUIRED if name != missing}
    done = compose_config(env_file(tmp_path, **given, **{missing: ""}))
    assert done.returncode != 0
    assert missing in done.stderr
    assert re.findall(rf"\$\{{{missing}:?[-=][^}}]*\}}", COMPOSE.read_text()) == []
    assert f"{missing}=\n" in ENV_EXAMPLE.read_text()


def test_every_image_is_built_from_the_dockerfile_or_pinned_to_a_version(
        services: dict[str, Obj]) -> None:
    for name, service in services.items():
        if "build" in service:
            assert Path(service["build"]["context"]).resolve() == ROOT, name
            assert service["build"].get("dockerfile") == "deploy/Dockerfile", name
            continue
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert re.search(r"\d", tag) and "latest" not in tag, f"{name}: {image}"


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
        services: dict[str, Obj]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"


def test_no_port_is_published_beyond_the_loopback_by_default(services: dict[str, Obj]) -> None:
    for name, service in services.items():
        for host, _, target in published(service):
            assert host == "127.0.0.1", f"{name}:{target} is bound to {host or 'every address'}"


def test_gateway_ports_healthchecks_and_environment_agree_with_the_app(
        services: dict[str, Obj]) -> None:
    gw = gateway(services)
    assert set(gw) == {"ingress", "accounting"} | {f"worker-{p}" for p in PROVIDERS}
    for name, service in gw.items():
        env = service["environment"]
        assert env["AIGW_LOG_FORMAT"] == "json", name
        assert env["AIGW_MASTER_KEY"] == "test-value", name
        assert float(service["stop_grace_period"].rstrip("s")) > float(env["AIGW_DRAIN_SECONDS"])
        assert service.get("read_only") is True, name
        port, path = health_url(service)
        assert path in APP_ROUTES, name
        if name == "ingress":
            assert port == int(env["AIGW_PORT"])
            assert [target for *_, target in published(service)] == [int(env["AIGW_PORT"])]
        else:
            assert port == int(env["AIGW_METRICS_PORT"]), name
            assert not service.get("ports"), f"{name} publishes a port: --scale would clash"
        assert "container_name" not in service, f"{name}: --scale needs generated names"
    for provider in PROVIDERS:
        assert gw[f"worker-{provider}"]["command"] == ["worker", "--provider", provider]
    assert gw["accounting"]["environment"]["CLICKHOUSE_URL"].startswith(
        "http://default:test-value@clickhouse:8123/")


def test_prometheus_scrapes_each_gateway_service_on_the_port_it_serves_metrics_on(
        services: dict[str, Obj]) -> None:
    if not PROMETHEUS.exists():
        pytest.skip(f"{PROMETHEUS.relative_to(ROOT)} is not written yet")
    gw = gateway(services)
    expected = {name: int(s["environment"]["AIGW_PORT" if name == "ingress" else
                                          "AIGW_METRICS_PORT"]) for name, s in gw.items()}
    scraped: dict[str, int] = {}
    for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                scraped[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            scraped.update(dict.fromkeys(dns["names"], int(dns["port"])))
    assert {name: scraped.get(name) for name in expected} == expected
    mounts = " ".join(services["prometheus"]["volumes"] if isinstance(
        services["prometheus"]["volumes"][0], str) else
        [f"{v['source']}:{v['target']}" for v in services["prometheus"]["volumes"]])
    assert str(PROMETHEUS.parent) in mounts


def test_grafana_is_provisioned_from_the_deploy_folder_with_the_clickhouse_plugin(
        services: dict[str, Obj]) -> None:
    grafana = services["grafana"]
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}"
               for v in grafana["volumes"]]
    for folder in ("provisioning", "dashboards"):
        assert any(v.startswith(f"{ROOT}/deploy/grafana/{folder}:") for v in volumes), folder
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert grafana["environment"]["CLICKHOUSE_PASSWORD"] == "test-value"


def test_nats_requires_a_login_and_each_gateway_service_logs_in_as_its_own_role(
        tmp_path: Path) -> None:
    values = {name: f"value-of-{name.lower()}" for name in REQUIRED}
    done = compose_config(env_file(tmp_path, **values))
    assert done.returncode == 0, done.stderr
    services: dict[str, Obj] = yaml.safe_load(done.stdout)["services"]
    nats = services["nats"]
    assert {k: nats["environment"][k] for k in NATS_PASSWORDS} == {
        k: values[k] for k in NATS_PASSWORDS}
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}"
              for v in nats["volumes"]]
    for name in ("nats.conf", "authorization.conf"):
        assert any(m.startswith(f"{ROOT}/deploy/nats/{name}:/etc/nats/{name}") for m in mounts)
    for name, service in gateway(services).items():
        role = "worker" if name.startswith("worker-") else name
        env = service["environment"]
        assert env["AIGW_NATS_USER"] == role, name
        assert env["AIGW_NATS_PASSWORD"] == values[f"AIGW_NATS_{role.upper()}_PASSWORD"], name
        others = [v for k, v in values.items() if k in NATS_PASSWORDS and role.upper() not in k]
        assert not set(others) & set(map(str, env.values())), f"{name} holds another's password"


def test_the_dockerfile_builds_in_two_stages_and_runs_aigw_as_an_unprivileged_user() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "build the wheel in a builder stage"
    final = lines[stages[-1]:]
    assert any(line.startswith("COPY --from=") for line in final)
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["aigw"]' in final
    assert 'CMD ["ingress"]' in final
    for package in PACKAGES:
        assert any(re.fullmatch(rf"COPY {package} \S+", line) for line in lines), package
    text = "\n".join(lines).lower()
    assert not re.search(r"(curl|wget|add\s+https?://)[^\n]*(nats|clickhouse)", text)
    assert not re.search(r"apt-get[^\n]*(nats|clickhouse)", text)


def test_secrets_stay_out_of_the_repository_and_the_build_context() -> None:
    values = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
              if line and not line.startswith("#")]
    assert [name for name, value in values if value] == [], ".env.example holds no value"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "**/secrets.env", ".git", ".venv"} <= set(ignored)
