"""The response cache's stores (in-process and a real Redis) and capturing a miss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

from ingress.admission.redis_impl import connect
from ingress.cache.dedup import InFlight
from ingress.cache.store import (
    REDIS_PREFIX,
    CachedAnswer,
    CacheStore,
    Capture,
    MemoryCache,
    RedisCache,
    ResponseCache,
)
from schemas.config import Deployment
from schemas.frames import DoneFrame
from schemas.usage import TokenUsage
from tests.redis_server import RedisServer

USAGE = TokenUsage(prompt_tokens=7, completion_tokens=3)
RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": USAGE.to_openai(),
}
DEPLOYMENT = Deployment(id="d1", model_name="gpt", provider="openai", upstream_model="gpt-x")


def answer(stored_at: float | None = None, **fields: Any) -> CachedAnswer:
    given: dict[str, Any] = {"provider": "openai", "deployment_id": "d1",
                             "upstream_model": "gpt-x", "usage": USAGE,
                             "cost": Decimal("0.000123"), "response": RESPONSE}
    return CachedAnswer(stored_at=time.time() if stored_at is None else stored_at,
                        **(given | fields))


def uid() -> str:
    return uuid4().hex


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CacheStore]:
    if request.param == "memory":
        yield MemoryCache()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = connect(server.url, timeout=2.0)
    yield RedisCache(client)
    await client.aclose()


# --- both stores ---

async def test_a_stored_answer_comes_back_whole(store: CacheStore) -> None:
    key, stored = uid(), answer()
    await store.set(key, stored, 60)
    assert await store.get(key) == stored


async def test_a_streamed_answer_keeps_its_chunks_exactly(store: CacheStore) -> None:
    chunks = ['{"id":"c","choices":[{"index":0,"delta":{"content":"h\\u00e9"}}]}', "{}"]
    key, stored = uid(), answer(response=None, chunks=chunks)
    await store.set(key, stored, 60)
    found = await store.get(key)
    assert found is not None
    assert found.chunks == chunks
    assert found.response is None


async def test_an_unknown_key_is_a_miss(store: CacheStore) -> None:
    assert await store.get(uid()) is None


async def test_an_entry_expires_after_its_ttl(store: CacheStore) -> None:
    key = uid()
    await store.set(key, answer(), 0.05)
    assert await store.get(key) is not None
    await asyncio.sleep(0.1)
    assert await store.get(key) is None


async def test_money_survives_the_round_trip_exactly(store: CacheStore) -> None:
    key = uid()
    await store.set(key, answer(cost=Decimal("0.000000001")), 60)
    found = await store.get(key)
    assert found is not None
    assert found.cost == Decimal("0.000000001")


async def test_a_later_answer_replaces_an_earlier_one(store: CacheStore) -> None:
    key = uid()
    await store.set(key, answer(cost=Decimal(1)), 60)
    await store.set(key, answer(cost=Decimal(2)), 60)
    found = await store.get(key)
    assert found is not None
    assert found.cost == Decimal(2)


# --- one store ---

async def test_the_memory_store_forgets_the_least_recently_used_first() -> None:
    store = MemoryCache(max_entries=2)
    await store.set("a", answer(), 60)
    await store.set("b", answer(), 60)
    assert await store.get("a") is not None  # a is now the most recent
    await store.set("c", answer(), 60)
    assert await store.get("b") is None
    assert await store.get("a") is not None
    assert len(store) == 2


async def test_redis_expires_entries_itself(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, timeout=2.0)
    key = uid()
    await RedisCache(client).set(key, answer(), 30)
    ttl_ms = await client.pttl(REDIS_PREFIX + key)
    assert 29_000 < ttl_ms <= 30_000
    await client.aclose()


async def test_an_unreadable_redis_entry_is_a_miss(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, timeout=2.0)
    key = uid()
    await client.set(REDIS_PREFIX + key, b'{"schema_version": 99}')
    assert await RedisCache(client).get(key) is None
    await client.aclose()


async def test_redis_down_is_a_miss_and_a_skipped_store(
    private_redis_server: RedisServer,
) -> None:
    client: aioredis.Redis = connect(private_redis_server.url, timeout=0.5)
    store = RedisCache(client)
    private_redis_server.kill()
    await store.set(uid(), answer(), 60)  # does not raise
    assert await store.get(uid()) is None
    await client.aclose()


# --- ages ---

async def test_a_lookup_refuses_entries_older_than_its_max_age() -> None:
    cache = ResponseCache(MemoryCache())
    await cache.store.set("k", answer(stored_at=time.time() - 100), 600)
    assert await cache.lookup("k") is not None
    assert await cache.lookup("k", max_age=200) is not None
    assert await cache.lookup("k", max_age=50) is None


async def test_save_happens_in_the_background_and_drains() -> None:
    cache = ResponseCache(MemoryCache())
    saved: list[bool] = []
    cache.save("k", answer(), 60, then=lambda: saved.append(True))
    await cache.drain()
    assert saved == [True]
    assert await cache.lookup("k") is not None


# --- capture ---

def done(response: dict[str, Any] | None = RESPONSE) -> DoneFrame:
    return DoneFrame(usage=USAGE, response=response, cost=Decimal("0.5"),
                     upstream_model="gpt-x-2024")


async def test_a_complete_answer_is_stored_with_its_cost_and_origin() -> None:
    cache = ResponseCache(MemoryCache())
    Capture(cache, "k", 60).done(done(), DEPLOYMENT, streamed=False)
    await cache.drain()
    found = await cache.lookup("k")
    assert found is not None
    assert found.response == RESPONSE
    assert found.cost == Decimal("0.5")
    assert (found.provider, found.deployment_id, found.upstream_model) == (
        "openai", "d1", "gpt-x-2024")
    assert found.usage == USAGE


async def test_a_streamed_answer_is_stored_as_its_chunks() -> None:
    cache = ResponseCache(MemoryCache())
    capture = Capture(cache, "k", 60)
    capture.chunk(b'{"n":1}')
    capture.chunk(b'{"n":2}')
    capture.done(done(None), DEPLOYMENT, streamed=True)
    await cache.drain()
    found = await cache.lookup("k")
    assert found is not None
    assert found.chunks == ['{"n":1}', '{"n":2}']


async def test_an_abandoned_answer_is_not_stored() -> None:
    cache = ResponseCache(MemoryCache())
    capture = Capture(cache, "k", 60)
    capture.chunk(b'{"n":1}')
    capture.abandon()
    capture.done(done(None), DEPLOYMENT, streamed=True)  # too late: the first end wins
    await cache.drain()
    assert await cache.lookup("k") is None


async def test_a_non_streamed_done_without_a_response_is_not_stored() -> None:
    cache = ResponseCache(MemoryCache())
    Capture(cache, "k", 60).done(done(None), DEPLOYMENT, streamed=False)
    await cache.drain()
    assert await cache.lookup("k") is None


async def test_a_leader_stays_findable_until_its_entry_is_stored() -> None:
    cache, inflight = ResponseCache(MemoryCache()), InFlight()
    capture = Capture(cache, "k", 60, inflight.lead("k"))
    capture.done(done(), DEPLOYMENT, streamed=False)
    leader = inflight.leader("k")
    assert leader is not None
    assert leader.done()
    await cache.drain()
    assert inflight.leader("k") is None
    assert await cache.lookup("k") is not None


async def test_an_abandoned_leader_tells_its_followers_at_once() -> None:
    inflight = InFlight()
    capture = Capture(ResponseCache(MemoryCache()), "k", 60, inflight.lead("k"))
    leader = inflight.leader("k")
    assert leader is not None
    capture.abandon()
    assert await inflight.follow(leader) is None
    assert inflight.leader("k") is None
