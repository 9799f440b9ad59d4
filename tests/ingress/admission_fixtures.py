"""Admission tests' common ground: a clock starting on a minute boundary, unique scope ids,
Redis clients, the ``admission`` fixture over both stores (Redis and in-process), and
requests, reservations and spend read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

from ingress.admission import (
    Admission,
    AdmitRequest,
    Decision,
    LocalAdmission,
    RedisAdmission,
    Reservation,
    Scope,
)
from ingress.admission.redis_impl import connect
from tests.redis_server import RedisServer

# A minute boundary, near the real clock so Redis key TTLs (real time) outlive the test.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
USD = Decimal
ZERO = Decimal(0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def uid() -> str:
    return uuid4().hex[:12]


def redis_client(server: RedisServer) -> aioredis.Redis:
    return connect(server.url, max_connections=16, timeout=2.0)


@pytest.fixture(params=["redis", "local"], name="admission")
async def admission_store(request: pytest.FixtureRequest) -> AsyncIterator[Admission]:
    if request.param == "local":
        yield LocalAdmission()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis_client(server)
    store = RedisAdmission(client, namespace=f"test:{uid()}:")
    await store.load()
    yield store
    await client.aclose()


def ask(
    scopes: list[Scope],
    seconds: float = 0,
    tokens: int = 10,
    reserve: Decimal = ZERO,
    request_id: str | None = None,
) -> AdmitRequest:
    return AdmitRequest(request_id or uid(), scopes, tokens, reserve, now=at(seconds))


def reservation(decision: Decision) -> Reservation:
    assert decision.allowed, decision.reason
    assert decision.reservation is not None
    return decision.reservation


async def spent(admission: Admission, scope: Scope, seconds: float = 0) -> dict[str, Any]:
    status = await admission.status([scope], now=at(seconds))
    entry: dict[str, Any] = status["scopes"][0]
    return entry
