"""``GET /metrics`` (Prometheus text) and ``GET /health/targets`` (every process to scrape)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from core.telemetry.server import CONTENT_TYPE_LATEST, authorized, metrics_body
from ingress.deps import GatewayDep
from ingress.errors import ApiError

router = APIRouter()


def _check_key(request: Request, gateway: GatewayDep) -> None:
    if not authorized(request.headers.get("authorization"), gateway.settings.metrics_key):
        raise ApiError(401, "This route needs the bearer token set in AIGW_METRICS_KEY.",
                       type="authentication_error", code="invalid_api_key")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, gateway: GatewayDep) -> Response:
    _check_key(request, gateway)
    return Response(metrics_body(), media_type=CONTENT_TYPE_LATEST)


def _targets(request: Request, gateway: GatewayDep) -> list[dict[str, Any]]:
    own = str(request.base_url).rstrip("/") + "/metrics"
    targets: list[dict[str, Any]] = [{"role": "ingress", "provider": None, "url": own}]
    if gateway.settings.metrics_targets:
        targets += json.loads(gateway.settings.metrics_targets)
    return targets


@router.get("/health/targets")
async def targets(request: Request, gateway: GatewayDep,
                  format: str | None = None) -> JSONResponse:
    """The processes a Prometheus should scrape; ``?format=prometheus`` answers in its
    HTTP service discovery shape."""
    _check_key(request, gateway)
    found = _targets(request, gateway)
    if format != "prometheus":
        return JSONResponse(found)
    groups = []
    for target in found:
        url = urlsplit(target["url"])
        labels = {"role": target["role"], "__metrics_path__": url.path or "/metrics",
                  "__scheme__": url.scheme or "http"}
        if target.get("provider"):
            labels["provider"] = target["provider"]
        groups.append({"targets": [url.netloc], "labels": labels})
    return JSONResponse(groups)
