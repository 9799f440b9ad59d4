"""The operations dashboard: every query returns data on a real Prometheus scraping the contract."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.grafana_dashboard import overlapping_panels
from tests.deploy.metric_contract import (
    CONTRACT,
    JOBS,
    PROVIDER,
    SAMPLE_LABEL_VALUES,
    FakeProcesses,
    label_names_in,
    labels_of,
    metric_names_in,
    series_names,
)
from tests.prometheus_server import PrometheusServer, prometheus_tool

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "operations.json"
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "aigw.yaml"
RULES_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"

DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
PANELS: list[dict[str, Any]] = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
(PROVIDER_VARIABLE,) = DASHBOARD["templating"]["list"]
# What Grafana puts in for its macros with a 1 s scrape interval (rate needs two samples).
MACROS = {"__rate_interval": "10s", "__interval": "2s", "__range": "1m"}
ALL_PROVIDERS = ".*"  # the variable's allValue


TARGETS: dict[str, dict[str, Any]] = {
    f"{p['title']}/{t['refId']}": t for p in PANELS for t in p["targets"]
}


def queries() -> list[tuple[str, str]]:
    """(panel/refId, expr) of every panel target."""
    return [(query_id, target["expr"]) for query_id, target in TARGETS.items()]


def each_query() -> list[Any]:
    return [pytest.param(query_id, expr, id=query_id) for query_id, expr in queries()]


def render(expr: str, provider: str) -> str:
    """``expr`` as Grafana sends it to Prometheus; an unknown variable is an error."""
    values = {**MACROS, "provider": provider}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"${name} is neither a Grafana macro modelled here nor a variable")
        return values[name]

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", replace, expr)


def contract_name(series: str) -> str:
    for metric in CONTRACT:
        if series in metric.series_names:
            return metric.name
    return series


# --- provisioning -------------------------------------------------------------------------------


def test_datasource_is_prometheus_on_the_compose_service_under_a_fixed_uid() -> None:
    (datasource,) = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    assert (datasource["type"], datasource["uid"]) == ("prometheus", "aigw-prometheus")
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is False  # ClickHouse is the default


def test_datasource_time_interval_is_the_scrape_interval() -> None:
    (datasource,) = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    for config in ("prometheus.yml", "aigw-up.yml"):
        scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / config).read_text())
        assert datasource["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]


def test_dashboard_provider_loads_this_file_from_the_folder_it_reads() -> None:
    (provider,) = yaml.safe_load(PROVIDERS_FILE.read_text())["providers"]
    assert provider["type"] == "file"  # every *.json under options.path
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(str(v).split(":")[1::-1] for v in compose["services"]["grafana"]["volumes"])
    assert ROOT / mounts[provider["options"]["path"]] == DASHBOARD_FILE.parent


def test_dashboard_is_provisionable_with_a_uid_of_its_own() -> None:
    assert DASHBOARD["id"] is None
    assert DASHBOARD["uid"] == "aigw-operations"
    assert DASHBOARD["schemaVersion"] >= 39
    others = [json.loads(f.read_text())["uid"] for f in DASHBOARD_FILE.parent.glob("*.json")
              if f != DASHBOARD_FILE]
    assert DASHBOARD["uid"] not in others
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in PANELS]
    assert len(titles) == len(set(titles))


def test_panels_tile_the_grid_without_overlapping() -> None:
    assert overlapping_panels(DASHBOARD) == []


def test_every_panel_and_query_uses_the_provisioned_datasource() -> None:
    (datasource,) = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    expected = {"type": "prometheus", "uid": datasource["uid"]}
    refs = [p["datasource"] for p in PANELS] + [PROVIDER_VARIABLE["datasource"]]
    refs += [t["datasource"] for p in PANELS for t in p["targets"]]
    assert all(ref == expected for ref in refs), refs


# --- the queries, read --------------------------------------------------------------------------


@pytest.mark.parametrize(("query_id", "expr"), each_query())
def test_query_uses_only_metrics_and_labels_of_the_contract(query_id: str, expr: str) -> None:
    assert metric_names_in(expr) <= series_names(), metric_names_in(expr) - series_names()
    labels = labels_of(metric_names_in(expr))
    assert label_names_in(expr) <= labels, label_names_in(expr) - labels
    legend = TARGETS[query_id]["legendFormat"]
    assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) <= labels, legend


def test_every_range_is_the_rate_interval() -> None:
    ranges = {r for _, expr in queries() for r in re.findall(r"\[([^\]]*)\]", expr)}
    assert ranges == {"$__rate_interval"}


@pytest.mark.parametrize(("query_id", "expr"), each_query())
def test_query_follows_the_provider_variable_wherever_the_series_has_a_provider(
    query_id: str, expr: str
) -> None:
    with_provider = {n for m in CONTRACT if PROVIDER in m.labels for n in m.series_names}
    for match in re.finditer(r"\b([a-z_:][\w:]*)\s*(\{[^}]*\})?", expr):
        if match.group(1) in with_provider:
            assert f'{PROVIDER}=~"$provider"' in (match.group(2) or ""), match.group(0)


def test_every_contract_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    used = {name for _, expr in queries() for name in metric_names_in(expr)}
    rules = yaml.safe_load(RULES_FILE.read_text())["groups"]
    used |= {name for g in rules for r in g["rules"] for name in metric_names_in(r["expr"])}
    assert {m.name for m in CONTRACT} - {contract_name(n) for n in used} == set()


# --- the queries, run ---------------------------------------------------------------------------


def scraped_three_times(server: PrometheusServer) -> bool:
    counts = server.query("count_over_time(up[1m]) >= 3 and up == 1")
    return {series["metric"]["job"] for series in counts} == set(JOBS.values())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    binary = prometheus_tool("prometheus")
    with FakeProcesses() as fakes:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": JOBS[role], "static_configs": [{"targets": [at]}]}
                               for role, at in fakes.addresses.items()],
        }
        with PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), config) as server:
            server.wait_for(lambda: scraped_three_times(server), 30,
                            "three scrapes of every process")
            yield server


def values(server: PrometheusServer, expr: str) -> dict[str, float]:
    return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1])
            for s in server.query(expr)}


@pytest.mark.parametrize("provider", [ALL_PROVIDERS, "openai"], ids=["all", "openai"])
@pytest.mark.parametrize(("query_id", "expr"), each_query())
def test_query_returns_finite_numbers_on_prometheus(
    prometheus: PrometheusServer, query_id: str, expr: str, provider: str
) -> None:
    result = values(prometheus, render(expr, provider))
    assert result, f"no series for {query_id}"
    assert all(math.isfinite(v) for v in result.values()), result


def test_provider_variable_offers_every_configured_provider(prometheus: PrometheusServer) -> None:
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", PROVIDER_VARIABLE["definition"])
    assert match is not None
    assert PROVIDER_VARIABLE["query"]["query"] == PROVIDER_VARIABLE["definition"]
    metric, label = match.groups()
    offered = prometheus.api(f"label/{label}/values", **{"match[]": metric})
    assert sorted(offered) == sorted(SAMPLE_LABEL_VALUES[PROVIDER])
    assert PROVIDER_VARIABLE["allValue"] == ALL_PROVIDERS


def panel_expr(title: str, ref: str = "A") -> str:
    (panel,) = [p for p in PANELS if p["title"] == title]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    return render(target["expr"], ALL_PROVIDERS)


def test_worker_saturation_is_inflight_over_capacity_per_provider(
    prometheus: PrometheusServer,
) -> None:
    saturation = values(prometheus, panel_expr("Worker saturation"))
    assert sorted(saturation.values()) == [3 / 8, 3 / 8]  # the sample gauges: 3 of 8 busy


def test_5xx_share_is_the_fraction_of_requests_answered_5xx(prometheus: PrometheusServer) -> None:
    # Every sample status class grows by one a scrape.
    (share,) = values(prometheus, panel_expr("5xx share")).values()
    assert share == pytest.approx(1 / 3)
