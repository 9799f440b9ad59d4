"""What replicas' health boards share through a real NATS KV: one probe lease holder at a
time, and the checks recorded on either replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest

from cli.nats_server import NatsServer
from ingress.routing.breaker import Availability
from ingress.routing.health_board import HealthBoard, HealthCheck
from schemas.config import (
    RouterSettings,
)
from tests.ingress.health_probe_waits import _until

Clock = list[float]


@pytest.fixture
async def boards(nats_server: NatsServer) -> AsyncIterator[tuple[HealthBoard, HealthBoard,
                                                                  Clock]]:
    """Two replicas' boards on one fresh bucket, with a clock the test moves."""
    clock = [1000.0]
    bucket = f"health_probe_{uuid.uuid4().hex[:12]}"
    settings = RouterSettings(allowed_fails=0, cooldown_time=10)
    ncs = [await nats.connect(nats_server.url) for _ in range(2)]
    a, b = (HealthBoard(nc, settings, bucket=bucket, clock=lambda: clock[0]) for nc in ncs)
    await a.start()
    await b.start()
    yield a, b, clock
    for board in (a, b):
        await board.stop()
    for nc in ncs:
        await nc.close()


async def test_one_replica_holds_the_probe_lease_until_it_stops_renewing(
    boards: tuple[HealthBoard, HealthBoard, Clock],
) -> None:
    a, b, clock = boards
    assert await a.take_probe_lease("a", 60)
    assert not await b.take_probe_lease("b", 60)
    clock[0] += 59
    assert await a.take_probe_lease("a", 60)  # renewed before its time was up
    clock[0] += 59
    assert not await b.take_probe_lease("b", 60)
    clock[0] += 1  # a let a whole interval pass: b takes over
    assert await b.take_probe_lease("b", 60)
    assert not await a.take_probe_lease("a", 60)


async def test_of_replicas_taking_the_lease_at_once_one_wins(
    boards: tuple[HealthBoard, HealthBoard, Clock],
) -> None:
    a, b, _ = boards
    won = await asyncio.gather(a.take_probe_lease("a", 60), b.take_probe_lease("b", 60))
    assert sorted(won) == [False, True]
    holder, other = ((a, "a"), (b, "b")) if won[0] else ((b, "b"), (a, "a"))
    again = await asyncio.gather(holder[0].take_probe_lease(holder[1], 60),
                                 other[0].take_probe_lease(other[1], 60))
    assert list(again) == [True, False]  # the winner keeps it


async def test_a_check_recorded_on_one_replica_is_seen_by_the_other(
    boards: tuple[HealthBoard, HealthBoard, Clock],
) -> None:
    a, b, _ = boards
    check = HealthCheck(deployment_id="dep#1", at=1000.0, ok=False, latency_ms=12.5,
                        error="server: boom")
    await a.record_check(check)
    assert a.last_check("dep#1") == check
    await _until(lambda: b.last_check("dep#1") == check)
    newer = check.model_copy(update={"at": 1001.0, "ok": True, "error": None})
    await a.record_check(newer)
    await _until(lambda: b.last_check("dep#1") == newer)
    # neither the checks nor the lease read as breakers
    assert await a.take_probe_lease("a", 60)
    assert a.snapshot() == {} and b.snapshot() == {}
    assert b.availability("dep#1") is Availability.HEALTHY
