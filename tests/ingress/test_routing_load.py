from __future__ import annotations

from ingress.admission.redis_impl import connect
from ingress.routing.load import LoadTracker
from tests.redis_server import RedisServer


def test_in_flight_latency_and_usage_are_counted_per_deployment() -> None:
    clock = [120.0]
    tracker = LoadTracker(clock=lambda: clock[0])
    tracker.started("d")
    tracker.started("d")
    assert tracker.load("d").in_flight == 2
    tracker.finished("d", latency_ms=100, ttft_ms=20, tokens=30)
    tracker.finished("d", latency_ms=200, ttft_ms=40, tokens=10)
    load = tracker.load("d")
    assert load.in_flight == 0
    assert load.latency_ms == 120  # moving average: 100 + 0.2 * (200 - 100)
    assert load.ttft_ms == 24
    assert (load.requests_this_minute, load.tokens_this_minute) == (2, 40)
    clock[0] += 60
    assert tracker.load("other").requests_this_minute == 0
    tracker.started("d")
    assert tracker.load("d").requests_this_minute == 1  # a new minute


def test_an_attempt_that_ends_without_numbers_still_leaves_flight() -> None:
    tracker = LoadTracker()
    tracker.started("d")
    tracker.finished("d")
    tracker.finished("d")  # never below zero
    assert tracker.load("d").in_flight == 0
    assert tracker.load("d").latency_ms is None


async def test_two_replicas_see_each_others_load_through_redis(
    redis_server: RedisServer,
) -> None:
    clients = [connect(redis_server.url) for _ in range(2)]
    a, b = LoadTracker(clients[0]), LoadTracker(clients[1])
    ids = ["shared-dep"]
    try:
        for _ in range(3):
            a.started("shared-dep")
        b.started("shared-dep")
        b.finished("shared-dep", latency_ms=50, tokens=5)
        await a.sync(ids)
        await b.sync(ids)
        await a.sync(ids)
        assert a.load("shared-dep").in_flight == 3
        assert b.load("shared-dep").in_flight == 3
        assert a.load("shared-dep").latency_ms == 50
        assert a.load("shared-dep").requests_this_minute == 4
        assert a.load("shared-dep").tokens_this_minute == 5
    finally:
        for client in clients:
            await client.aclose()
