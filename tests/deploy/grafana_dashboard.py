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
