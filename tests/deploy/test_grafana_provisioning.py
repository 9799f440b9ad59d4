"""The Grafana provisioning and the AI Gateway dashboard's shape: the datasource is the
ClickHouse plugin on the compose service, the dashboard provider reads the folder compose
mounts, every query uses the provisioned datasource; the dashboard is provisionable with a
stable uid, its panels tile the grid, its variables offer All and many, and every panel is
time-bounded and follows every variable."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.grafana_dashboard import (
    DASHBOARD,
    DASHBOARD_FILE,
    DATASOURCES_FILE,
    PANELS,
    PLUGIN,
    PROVIDERS_FILE,
    ROOT,
    TEMPLATES,
    VARIABLES,
    overlapping_panels,
)
from tests.deploy.grafana_macros import ALL

# --- provisioning ---------------------------------------------------------------------------


def compose_grafana() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(compose["services"]["grafana"])


def mounts() -> dict[str, str]:
    """Container path -> host path (relative to the repo) of Grafana's volumes."""
    out: dict[str, str] = {}
    for volume in compose_grafana()["volumes"]:
        host, container, *_ = str(volume).split(":")
        out[container] = host.removeprefix("./")
    return out


def test_datasource_is_the_clickhouse_plugin_on_the_compose_service() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    assert datasource["type"] == PLUGIN
    assert datasource["uid"] == "aigw-clickhouse"
    assert datasource["jsonData"] == {
        "host": "clickhouse", "port": 8123, "protocol": "http", "secure": False,
        "username": "default", "defaultDatabase": "default",
    }
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "clickhouse" in compose["services"]
    assert PLUGIN in compose_grafana()["environment"]["GF_INSTALL_PLUGINS"]


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    (provider,) = yaml.safe_load(PROVIDERS_FILE.read_text())["providers"]
    assert provider["type"] == "file"
    volumes = mounts()
    assert volumes["/etc/grafana/provisioning"] == "deploy/grafana/provisioning"
    host_dir = volumes[provider["options"]["path"]]
    assert (ROOT / host_dir / DASHBOARD_FILE.name).is_file()


def test_every_query_uses_the_provisioned_datasource() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    expected = {"type": PLUGIN, "uid": datasource["uid"]}
    refs = [p["datasource"] for p in DASHBOARD["panels"]]
    refs += [t["datasource"] for p in DASHBOARD["panels"] for t in p["targets"]]
    refs += [v["datasource"] for v in DASHBOARD["templating"]["list"]]
    assert all(ref == expected for ref in refs), refs


# --- the dashboard's shape ------------------------------------------------------------------


def test_dashboard_is_a_provisionable_dashboard_with_a_stable_uid() -> None:
    assert DASHBOARD["id"] is None
    assert DASHBOARD["uid"] == "aigw-overview"
    assert DASHBOARD["schemaVersion"] >= 39
    assert DASHBOARD["time"] == {"from": "now-24h", "to": "now"}
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert len(PANELS) == len(DASHBOARD["panels"])


def test_panels_tile_the_grid_without_overlapping() -> None:
    assert overlapping_panels(DASHBOARD) == []


def test_variables_offer_all_and_many_and_leave_all_to_conditional_all() -> None:
    assert set(TEMPLATES) == set(VARIABLES)
    for variable in TEMPLATES.values():
        assert variable["type"] == "query"
        assert variable["includeAll"] and variable["multi"]
        # A custom allValue would hide All from $__conditionalAll (it looks for $__all).
        assert variable.get("allValue") is None
        assert variable["current"]["value"] == [ALL]
        assert variable["refresh"] == 2  # options follow the time range
        assert "$__timeFilter(ts)" in variable["query"]


@pytest.mark.parametrize("title", list(PANELS))
def test_every_panel_is_time_bounded_and_follows_every_variable(title: str) -> None:
    panel = PANELS[title]
    for target in panel["targets"]:
        sql = target["rawSql"]
        assert "$__timeFilter(ts)" in sql
        for name, column in VARIABLES.items():
            assert f"$__conditionalAll({column} IN (${{{name}:singlequote}}), ${name})" in sql
        if panel["type"] == "timeseries":
            # The plugin turns long rows into one series per label: time must be sorted.
            assert (target["format"], target["queryType"]) == (0, "timeseries")
            assert sql.rstrip().endswith("ORDER BY time")
        else:
            assert (target["format"], target["queryType"]) == (1, "table")
