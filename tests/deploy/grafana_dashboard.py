"""The Grafana files the Grafana tests read: the AI Gateway dashboard (its panels and
template variables by name), the ClickHouse datasource and the dashboard provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "ai-gateway.json"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "aigw.yaml"
PLUGIN = "grafana-clickhouse-datasource"
VARIABLES = {"model": "model_alias", "team": "team_id", "key_id": "key_id"}

DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
PANELS: dict[str, dict[str, Any]] = {p["title"]: p for p in DASHBOARD["panels"]}
TEMPLATES: dict[str, dict[str, Any]] = {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def overlapping_panels(dashboard: dict[str, Any]) -> list[str]:
    """What is wrong with how ``dashboard``'s panels lie on Grafana's 24-column grid: a
    panel past the right edge, or two panels over the same cell. Empty when they tile."""
    problems: list[str] = []
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos, title = panel["gridPos"], panel["title"]
        if pos["x"] + pos["w"] > 24:
            problems.append(f"{title} runs past column 24")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    problems.append(f"{title} overlaps {cells[(x, y)]} at {(x, y)}")
                cells.setdefault((x, y), title)
    return problems
