"""Claims of in-flight calls across replicas, over a real Redis and a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from uuid import uuid4

import nats
import pytest
from nats.aio.client import Client as NatsClient
from redis.asyncio import Redis

from cli.nats_server import NatsServer
from ingress.cache.dedup_shared import CLAIM_PREFIX, SharedLeads
from ingress.cache.store import CachedAnswer
from schemas.usage import TokenUsage
from tests.redis_server import RedisServer

ANSWER = CachedAnswer(stored_at=time.time(), provider="openai", usage=TokenUsage(),
                      cost=Decimal("0.01"), response={"id": "x"})


@pytest.fixture
async def clients(
    redis_server: RedisServer, nats_server: NatsServer
) -> AsyncIterator[tuple[Redis, NatsClient]]:
    redis = Redis.from_url(redis_server.url)
    nc = await nats.connect(nats_server.url)
    yield redis, nc
    await nc.close()
    await redis.aclose()


async def nothing() -> CachedAnswer | None:
    return None


async def test_a_leader_that_dies_silently_holds_followers_for_seconds_not_minutes(
    clients: tuple[Redis, NatsClient],
) -> None:
    redis, nc = clients
    leader = SharedLeads(redis, nc, wait_seconds=300, claim_ttl=1.0)
    follower = SharedLeads(redis, nc, wait_seconds=300, claim_ttl=1.0)
    key = uuid4().hex
    assert await leader.claim(key)
    assert not await follower.claim(key)
    await asyncio.sleep(1.5)
    assert await redis.exists(CLAIM_PREFIX + key), "a live leader keeps renewing"
    for _, renewal in leader._held.values():  # the leader's replica dies: no more renewals
        renewal.cancel()
    began = time.monotonic()
    assert await follower.follow(key, nothing) is None
    assert time.monotonic() - began < 4


async def test_a_follower_is_served_what_the_leader_stored(
    clients: tuple[Redis, NatsClient],
) -> None:
    redis, nc = clients
    leader = SharedLeads(redis, nc, wait_seconds=30)
    follower = SharedLeads(redis, nc, wait_seconds=30)
    key = uuid4().hex
    assert await leader.claim(key)
    stored: list[CachedAnswer] = []

    async def lookup() -> CachedAnswer | None:
        return stored[0] if stored else None

    async def lead() -> None:
        await asyncio.sleep(0.3)
        stored.append(ANSWER)
        await leader.ended(key, stored=True)

    answer, _ = await asyncio.gather(follower.follow(key, lookup), lead())
    assert answer == ANSWER
    assert leader.held == 0
    assert not await redis.exists(CLAIM_PREFIX + key)


async def test_a_leader_whose_claim_lapsed_does_not_drop_the_next_leaders(
    clients: tuple[Redis, NatsClient],
) -> None:
    redis, nc = clients
    first = SharedLeads(redis, nc, wait_seconds=30, claim_ttl=0.3)
    second = SharedLeads(redis, nc, wait_seconds=30, claim_ttl=30)
    key = uuid4().hex
    assert await first.claim(key)
    for _, renewal in first._held.values():  # stalled: its claim lapses
        renewal.cancel()
    await asyncio.sleep(0.5)
    assert await second.claim(key)
    await first.ended(key, stored=False)
    assert await redis.exists(CLAIM_PREFIX + key), "the second leader's claim stands"
    await second.ended(key, stored=False)
    assert not await redis.exists(CLAIM_PREFIX + key)
