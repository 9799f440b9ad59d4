"""The Prometheus configs and alerts pass promtool, run on a real prometheus, and are all tested."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_contract import (
    JOBS,
    FakeProcesses,
    label_names_in,
    labels_of,
    metric_names_in,
    series_names,
)
from tests.prometheus_server import PrometheusServer, prometheus_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
COMPOSE_CONFIG = PROMETHEUS / "prometheus.yml"
AIGW_UP_CONFIG = PROMETHEUS / "aigw-up.yml"
RULES_FILE = PROMETHEUS / "alerts.yml"
UNIT_TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning"}

RULES: list[dict[str, Any]] = [
    rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]
]
ALERTS: dict[str, dict[str, Any]] = {rule["alert"]: rule for rule in RULES if "alert" in rule}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_tool("promtool"), *args], capture_output=True, text=True,
                          timeout=60, cwd=PROMETHEUS)


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


# --- promtool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [COMPOSE_CONFIG, AIGW_UP_CONFIG], ids=lambda p: p.name)
def test_config_is_valid_and_loads_the_alert_rules(config: Path) -> None:
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert load(config)["rule_files"] == [RULES_FILE.name]
    assert f"SUCCESS: {len(RULES)} rules found" in checked.stdout


def test_alert_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_unit_tests_pass() -> None:
    assert UNIT_TEST_FILES
    tested = promtool("test", "rules", *map(str, UNIT_TEST_FILES))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TEST_FILES:
        unit_tests = load(path)
        assert [(path.parent / f).resolve() for f in unit_tests["rule_files"]] == [RULES_FILE]
        for group in unit_tests["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    # promtool passes a "no alert" test on a misspelt name, so every name must be real.
    assert (fires | quiet) <= ALERTS.keys(), (fires | quiet) - ALERTS.keys()
    assert ALERTS.keys() - fires == set(), "alerts never seen firing"
    assert ALERTS.keys() - quiet == set(), "alerts never seen staying quiet"


# --- the rules themselves -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_a_severity_a_summary_and_a_description(name: str) -> None:
    rule = ALERTS[name]
    assert name.startswith("Aigw")
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_uses_only_metrics_and_labels_of_the_contract(name: str) -> None:
    rule = ALERTS[name]
    templates = " ".join(rule["annotations"].values())
    exprs = [rule["expr"], *re.findall(r'query "([^"]*)"', templates)]
    for expr in exprs:
        assert metric_names_in(expr) <= series_names(), metric_names_in(expr) - series_names()
        labels = labels_of(metric_names_in(expr))
        assert label_names_in(expr) <= labels, label_names_in(expr) - labels
    # The alert's own labels are what the expression keeps: the labels of its series at most.
    used_labels = set(re.findall(r"\$labels\.(\w+)", templates))
    labels = labels_of(metric_names_in(rule["expr"]))
    assert used_labels <= labels, used_labels - labels


# --- where the configs point -------------------------------------------------------------------


def test_compose_config_scrapes_every_gateway_service_under_its_job() -> None:
    jobs = {job["job_name"]: job for job in load(COMPOSE_CONFIG)["scrape_configs"]}
    assert jobs.keys() == set(JOBS.values())
    services = load(ROOT / "docker-compose.yml")["services"]
    (ingress,) = jobs["aigw-ingress"]["static_configs"]
    assert ingress["targets"] == ["ingress:4000"]
    assert any(str(p).endswith(":4000") for p in services["ingress"]["ports"])
    (accounting,) = jobs["aigw-accounting"]["static_configs"]
    assert accounting["targets"] == ["accounting:9464"]
    assert "accounting" in services
    # Every worker service, each container of a scaled one: one A record per container.
    (workers,) = jobs["aigw-worker"]["dns_sd_configs"]
    assert (workers["type"], workers["port"]) == ("A", 9464)
    assert set(workers["names"]) == {name for name in services if name.startswith("worker-")}


def aigw_up_config(ingress: str) -> dict[str, Any]:
    """aigw-up.yml pointed at a fake gateway, with everything happening every second."""
    config = load(AIGW_UP_CONFIG)
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES_FILE)]
    (job,) = config["scrape_configs"]
    (discovery,) = job["http_sd_configs"]
    assert discovery["url"] == "http://127.0.0.1:4000/health/targets?format=prometheus"
    discovery["url"] = f"http://{ingress}/health/targets?format=prometheus"
    return config


@pytest.fixture(scope="module")
def aigw_up_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    binary = prometheus_tool("prometheus")
    with FakeProcesses() as fakes:
        config = aigw_up_config(fakes.addresses["ingress"])
        with PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), config) as server:
            yield server


def active_targets(server: PrometheusServer) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = server.api("targets", state="active")["activeTargets"]
    return targets


def test_aigw_up_config_scrapes_every_listed_process_under_its_role_job(
    aigw_up_prometheus: PrometheusServer,
) -> None:
    server = aigw_up_prometheus
    server.wait_for(lambda: len(active_targets(server)) == 3
                    and all(t["health"] == "up" for t in active_targets(server)),
                    20, "three healthy targets from the HTTP service discovery")
    labels = {t["labels"]["job"]: t["labels"] for t in active_targets(server)}
    assert labels.keys() == set(JOBS.values())
    assert labels["aigw-worker"]["provider"] == "openai"
    assert all("role" not in target for target in labels.values())
    capacity = server.query("aigw_worker_capacity")
    assert capacity
    assert {series["metric"]["job"] for series in capacity} == {"aigw-worker"}


def test_every_alert_rule_evaluates_without_error_on_scraped_series(
    aigw_up_prometheus: PrometheusServer,
) -> None:
    server = aigw_up_prometheus

    def rules() -> list[dict[str, Any]]:
        groups = server.api("rules", type="alert")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    server.wait_for(lambda: len(rules()) == len(ALERTS)
                    and all(r["health"] != "unknown" for r in rules()),
                    20, "every alert rule to be evaluated")
    failing = {r["name"]: r.get("lastError") for r in rules() if r["health"] != "ok"}
    assert failing == {}
