"""Liveness (the process answers), readiness (NATS is up and every provider has a worker),
and ``GET /health``: every deployment's circuit breaker, load and last background health
check, as this replica sees it.

``GET /health`` shows the master key (or anybody, on a gateway without one) everything. A
virtual key sees only the deployments of the models it may use, and of each only its
model name and whether it is up: no upstream model, provider, error text or live counts,
which tell one tenant about another's traffic and the operator's contracts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ingress.auth.principal import Principal, allowed
from ingress.deps import AuthedGateway, GatewayDep
from ingress.routing.breaker import Availability
from ingress.routing.health_board import HealthCheck
from schemas import subjects
from schemas.health import ProcessStatus

router = APIRouter()


@router.get("/health/liveliness")
@router.get("/health/liveness")
async def liveliness() -> dict[str, str]:
    return {"status": "alive"}


async def _worker_answers(gateway: GatewayDep, provider: str) -> bool:
    try:
        await gateway.nc.request(subjects.ping(provider), b"", timeout=1.0)
    except (NoRespondersError, NatsTimeout):
        return False
    return True


@router.get("/health/readiness")
async def readiness(gateway: GatewayDep, request: Request) -> JSONResponse:
    providers = gateway.config.providers
    connected = gateway.nc.is_connected
    answers = (
        await asyncio.gather(*(_worker_answers(gateway, p) for p in providers))
        if connected
        else [False] * len(providers)
    )
    workers = {p: ("ok" if ok else "no worker") for p, ok in zip(providers, answers, strict=True)}
    missing = [p for p, ok in zip(providers, answers, strict=True) if not ok]
    ready = connected and not missing
    body: dict[str, Any] = {
        "status": "ready" if ready else "unavailable",
        "nats": "connected" if connected else "disconnected",
        "workers": workers,
    }
    if missing:
        body["missing"] = missing
    processes: ProcessStatus | None = request.app.state.processes
    if processes is not None:  # aigw up: its children, restarted when they die
        body["processes"] = processes()
        down = [name for name, p in body["processes"].items() if p["state"] != "running"]
        if down:
            # Calls may still work (usage waits in JetStream while accounting is away),
            # but the gateway is not whole until they are back.
            body["restarting"] = down
            ready = False
            body["status"] = "unavailable"
    return JSONResponse(body, status_code=200 if ready else 503)


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _check(check: HealthCheck | None) -> dict[str, Any] | None:
    if check is None:
        return None
    return {"at": _iso(check.at), "ok": check.ok, "latency_ms": check.latency_ms,
            "error": check.error}


def _tenant_view(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model_name": r["model_name"], "state": r["state"]} for r in rows]


@router.get("/health")
async def deployments(request: Request, gateway: AuthedGateway) -> dict[str, Any]:
    """Read from memory: the KV mirror of the breakers and the shared load counters."""
    principal: Principal = request.state.principal
    operator = principal.master or principal.key is None
    routing = gateway.router
    rows: list[dict[str, Any]] = []
    for d in routing.deployments:
        if not operator and not allowed(principal, d.model_name):
            continue
        entry = routing.health.entry(d.id)
        state = routing.health.availability(d.id)
        load = routing.load.load(d.id)
        rows.append({
            "id": d.id,
            "model_name": d.model_name,
            "provider": d.provider,
            "model": d.upstream_model,
            "state": {
                Availability.HEALTHY: "healthy",
                Availability.COOLING: "cooling_down",
                Availability.PROBE_READY: "probe_ready",
                Availability.PROBING: "probing",
            }[state],
            "circuit": entry.state.value if entry else "closed",
            "cooldown_until": _iso(entry.until) if state is Availability.COOLING and entry
            else None,
            "recent_failures": len(entry.fails) if entry else 0,
            "last_error": entry.reason if entry else None,
            "in_flight": load.in_flight,
            "latency_ms": load.latency_ms,
            "ttft_ms": load.ttft_ms,
            "requests_this_minute": load.requests_this_minute,
            "tokens_this_minute": load.tokens_this_minute,
            "last_check": _check(routing.health.last_check(d.id)),
        })
    healthy = sum(r["state"] in ("healthy", "probe_ready") for r in rows)
    if not operator:
        return {"healthy_count": healthy, "unhealthy_count": len(rows) - healthy,
                "deployments": _tenant_view(rows)}
    checks = gateway.config.health_checks
    return {
        "routing_strategy": routing.settings.routing_strategy,
        "background_health_checks": checks.enabled,
        "health_check_interval": checks.interval,
        "healthy_count": healthy,
        "unhealthy_count": len(rows) - healthy,
        "deployments": rows,
    }
