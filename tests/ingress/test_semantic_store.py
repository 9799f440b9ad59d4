"""The semantic cache's shared store over a real nats-server: two stores stand for two
ingress replicas following one bucket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from uuid import uuid4

import nats
import pytest
from nats.aio.client import Client

from cli.nats_server import NatsServer
from ingress.cache.semantic_entry import entry_key
from ingress.cache.semantic_index import Vector, unit
from ingress.cache.semantic_store import SemanticStore
from ingress.cache.store import CachedAnswer
from schemas.usage import TokenUsage
from tests.fakes.concept_embeddings import embed


def vec(text: str) -> Vector:
    found = unit(embed(text))
    assert found is not None
    return found


def answer(content: str) -> CachedAnswer:
    return CachedAnswer(stored_at=time.time(), provider="openai", usage=TokenUsage(),
                        response={"choices": [{"message": {"content": content}}]})


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.02)


@pytest.fixture
async def pair(nats_server: NatsServer) -> AsyncIterator[tuple[SemanticStore, SemanticStore]]:
    bucket = f"semantic_{uuid4().hex[:8]}"
    clients: list[Client] = []
    stores: list[SemanticStore] = []
    for _ in range(2):
        nc = await nats.connect(nats_server.url)
        clients.append(nc)
        store = SemanticStore(nc, bound=2, max_age=60, bucket=bucket)
        await store.start()
        stores.append(store)
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            await store.stop()
        await clients[0].jetstream().delete_key_value(bucket)
        for nc in clients:
            await nc.close()


async def test_an_entry_written_by_one_replica_is_found_by_the_other(
    pair: tuple[SemanticStore, SemanticStore],
) -> None:
    first, second = pair
    first.save("scope", "What is the capital of France?", vec("What is the capital of France?"),
               answer("Paris"), ttl=60)
    await until(lambda: second.nearest("scope", vec("France capital")) is not None)
    match = second.nearest("scope", vec("Tell me France's capital city"))
    assert match is not None and match.similarity > 0.9
    found = await second.answer(match.key)
    assert found is not None and found.response == {"choices": [{"message": {
        "content": "Paris"}}]}


async def test_the_same_prompt_stored_twice_keeps_the_first_answer(
    pair: tuple[SemanticStore, SemanticStore],
) -> None:
    first, second = pair
    text = "How do I sort a list in Python?"
    first.save("scope", text, vec(text), answer("first"), ttl=60)
    await until(lambda: entry_key("scope", text) in second.index)
    second.save("scope", text, vec(text), answer("second"), ttl=60)
    await second.drain()
    found = await first.answer(entry_key("scope", text))
    assert found is not None and found.response is not None
    assert found.response["choices"][0]["message"]["content"] == "first"


async def test_a_full_scope_drops_its_oldest_entry_on_every_replica(
    pair: tuple[SemanticStore, SemanticStore],
) -> None:
    first, second = pair
    texts = ["capital of France", "capital of Spain", "weather today"]
    for text in texts:
        first.save("scope", text, vec(text), answer(text), ttl=60)
        await until(lambda t=text: entry_key("scope", t) in second.index)  # type: ignore[misc]
    oldest = entry_key("scope", texts[0])
    assert second.index.scope_size("scope") == 2 and oldest not in second.index
    assert first.index.scope_size("scope") == 2
    assert await first.answer(oldest) is None  # purged from the bucket too


async def test_an_entry_expires_in_the_bucket_and_in_every_index(
    pair: tuple[SemanticStore, SemanticStore],
) -> None:
    first, second = pair
    text = "How do I reset my password?"
    first.save("scope", text, vec(text), answer("reset it"), ttl=3)
    await until(lambda: entry_key("scope", text) in second.index)
    assert second.nearest("scope", vec(text)) is not None
    await asyncio.sleep(3.3)
    assert second.nearest("scope", vec(text)) is None
    assert first.nearest("scope", vec(text)) is None
    assert await second.answer(entry_key("scope", text)) is None
