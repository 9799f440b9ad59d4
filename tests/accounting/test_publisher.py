"""Usage events survive a short NATS outage; a full buffer drops loudly, never silently."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import nats
import pytest

from cli.nats_server import NatsServer
from core.publisher import UsagePublisher
from schemas import subjects
from schemas.usage import UsageEvent, UsageStatus


def _event(i: int) -> UsageEvent:
    return UsageEvent(event_id=f"pub-{i}", request_id=f"r{i}", model_alias="m",
                      provider="mock", status=UsageStatus.OK)


async def _until(check, within: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_events_wait_through_a_nats_restart_and_land_once(tmp_path: Path) -> None:
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
    info = await nc.jetstream().stream_info(subjects.USAGE_STREAM)
    assert info.state.messages == 60
    assert publisher.dropped == 0
    await publisher.stop()
    await nc.close()
    server.stop()


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
