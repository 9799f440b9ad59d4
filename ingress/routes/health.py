"""Liveness (the process answers) and readiness (NATS is up and every provider has a worker)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ingress.deps import GatewayDep
from schemas import subjects

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
async def readiness(gateway: GatewayDep) -> JSONResponse:
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
    return JSONResponse(body, status_code=200 if ready else 503)
