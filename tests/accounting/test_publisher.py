"""Usage events survive a short NATS outage and are stored once; waiting events travel in
groups; a full buffer drops loudly, never silently."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast

import nats
import pytest
from nats.js import JetStreamContext

from accounting.consumer import UsageConsumer
from accounting.store import UsageStore
from cli.nats_server import NatsServer
from core.publisher import GROUP_BYTES, UsagePublisher
from schemas import subjects
from schemas.event_message import group_id, split_events
from schemas.usage import UsageEvent, UsageStatus
from tests.usage_stream import stream_events


def _event(i: int, provider: str = "mock", **fields: Any) -> UsageEvent:
    return UsageEvent(event_id=f"pub-{i}", request_id=f"r{i}", model_alias="m",
                      provider=provider, status=UsageStatus.OK, **fields)


async def _until(check, within: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_events_wait_through_a_nats_restart_and_are_stored_once(
    tmp_path: Path, store: UsageStore,
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    publisher = UsagePublisher(nc.jetstream())
    await publisher.start()
    for i in range(10):
        publisher.submit(_event(i))
    await _until(lambda: publisher.published == 10)

    server.stop()
    for i in range(10, 60):
        publisher.submit(_event(i))
    publisher.submit(_event(5))  # a re-publish of an event already stored
    await asyncio.sleep(0.5)
    assert publisher.pending == 51

    server.start()
    await _until(lambda: publisher.pending == 0)
    assert publisher.dropped == 0
    # Every event reached the stream, the one re-published in a group of others too (as
    # after a spool replay): the store, not JetStream, keeps it from being counted twice.
    in_stream = [e["event_id"] for e in await stream_events(nc.jetstream())]
    assert sorted(set(in_stream)) == sorted(f"pub-{i}" for i in range(60))
    assert len(in_stream) == 61
    consumer = UsageConsumer(nc, store, batch_size=100, batch_age=0.05)
    await consumer.start()
    await _until(lambda: consumer.stats.received == 61)
    await consumer.stop()
    assert (consumer.stats.inserted, consumer.stats.duplicates) == (60, 1)
    assert store.client.command("SELECT count() FROM usage_events") == 60
    await publisher.stop()
    await nc.close()
    server.stop()


async def test_waiting_events_go_as_one_message_per_subject_in_order(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url)
    publisher = UsagePublisher(nc.jetstream(), linger=0.2)
    await publisher.start()
    events = [_event(i, provider=("openai", "anthropic")[i % 2]) for i in range(40)]
    for event in events:
        publisher.submit(event)
    await _until(lambda: publisher.published == 40)
    js = nc.jetstream()
    info = await js.stream_info(subjects.USAGE_STREAM)
    assert info.state.messages == 2  # one per provider's subject
    for seq in (1, 2):
        msg = await js.get_msg(subjects.USAGE_STREAM, seq)
        ids = [UsageEvent.model_validate_json(line).event_id for line in split_events(msg.data)]
        provider = "openai" if msg.subject == subjects.usage("openai") else "anthropic"
        assert ids == [e.event_id for e in events if e.provider == provider]
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == group_id(ids)
    await publisher.stop()
    await nc.close()
    server.stop()


def test_a_group_is_cut_before_it_outgrows_a_message() -> None:
    publisher = UsagePublisher(cast(JetStreamContext, None))
    big = "x" * 100_000
    for i in range(7):
        publisher.submit(_event(i, metadata={"note": big}))
    messages = publisher._messages(list(publisher._buffer))
    assert [len(split_events(body)) for _, _, body in messages] == [2, 2, 2, 1]
    assert all(len(body) <= GROUP_BYTES for _, _, body in messages)
    # The same events make the same messages: a retried publish is a duplicate to JetStream.
    assert messages == publisher._messages(list(publisher._buffer))


async def test_a_full_buffer_counts_and_logs_what_it_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    publisher = UsagePublisher(nc.jetstream(), capacity=10)
    await publisher.start()
    server.stop()
    with caplog.at_level(logging.ERROR, logger="aigw.usage"):
        for i in range(15):
            publisher.submit(_event(i))
    assert publisher.dropped == 5
    assert "dropped event" in caplog.text
    server.start()
    await _until(lambda: publisher.pending == 0)
    await publisher.stop()
    await nc.close()
    server.stop()
