"""Admission with Redis down: closed mode refuses, open mode falls back to local limits,
and the resilient store returns to Redis once it is back."""

from __future__ import annotations

import pytest

from ingress.admission import (
    AdmissionUnavailable,
    RedisAdmission,
    ResilientAdmission,
    Scope,
)
from tests.ingress.admission_fixtures import (
    USD,
    admission_store,  # noqa: F401 - the ``admission`` fixture, one per store
    ask,
    at,
    redis_client,
    reservation,
    uid,
)
from tests.redis_server import RedisServer


async def test_closed_mode_refuses_when_redis_is_down(
    private_redis_server: RedisServer,
) -> None:
    client = redis_client(private_redis_server)
    store = ResilientAdmission(RedisAdmission(client), mode="closed", retry_interval=60)
    key = Scope("key", uid(), rpm=5)
    held = reservation(await store.admit(ask([key], 0)))
    assert held.issuer == "redis"
    private_redis_server.kill()
    with pytest.raises(AdmissionUnavailable):
        await store.admit(ask([key], 1))
    # Within the retry interval Redis is not even tried.
    with pytest.raises(AdmissionUnavailable):
        await store.admit(ask([key], 2))
    # Settling a request that already ran never fails the caller.
    assert not (await store.settle(held, 10, USD(0), now=at(3))).settled
    await client.aclose()


async def test_open_mode_falls_back_to_local_limits(private_redis_server: RedisServer) -> None:
    client = redis_client(private_redis_server)
    store = ResilientAdmission(RedisAdmission(client), mode="open", retry_interval=60)
    key = Scope("key", uid(), rpm=2)
    assert (await store.admit(ask([key], 0))).allowed
    private_redis_server.kill()
    fallback = [await store.admit(ask([key], 1)) for _ in range(3)]
    # The local store counts from zero: two more, then its own limit.
    assert [d.allowed for d in fallback] == [True, True, False]
    assert reservation(fallback[0]).issuer == "local"
    assert store.degraded
    assert (await store.settle(reservation(fallback[0]), 10, None, now=at(2))).settled
    status = await store.status([key], now=at(2))
    assert status["degraded"] is True
    await client.aclose()


async def test_resilient_store_returns_to_redis_when_it_is_back(
    private_redis_server: RedisServer,
) -> None:
    clock = [0.0]
    client = redis_client(private_redis_server)
    store = ResilientAdmission(RedisAdmission(client), mode="closed", retry_interval=1,
                               clock=lambda: clock[0])
    key = Scope("key", uid(), rpm=5)
    private_redis_server.kill()
    with pytest.raises(AdmissionUnavailable):
        await store.admit(ask([key], 0))
    private_redis_server.start()
    await client.aclose()
    client = redis_client(private_redis_server)
    store.primary = RedisAdmission(client)
    clock[0] = 2.0
    assert (await store.admit(ask([key], 1))).allowed
    assert not store.degraded
    await client.aclose()
