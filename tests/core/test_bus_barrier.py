"""A subscription made just before ``barrier`` is one the server has: a message published
right after on another connection reaches it, every time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from cli.nats_server import NatsServer
from core.bus_barrier import barrier


@pytest.fixture
async def two(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Client, Client]]:
    server = NatsServer(tmp_path_factory.mktemp("barrier-nats"))
    server.start()
    subscriber, publisher = await nats.connect(server.url), await nats.connect(server.url)
    yield subscriber, publisher
    await subscriber.close()
    await publisher.close()
    server.stop()


async def test_a_request_right_after_a_subscription_always_finds_it(
    two: tuple[Client, Client],
) -> None:
    subscriber, publisher = two

    async def answer(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(b"here")

    for i in range(2000):
        sub = await subscriber.subscribe(f"barrier.{i}", cb=answer)
        await barrier(subscriber)
        # "no responders" at once if the server had not read the subscription yet
        reply = await publisher.request(f"barrier.{i}", b"", timeout=5)
        assert reply.data == b"here"
        await sub.unsubscribe()
