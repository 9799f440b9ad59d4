from __future__ import annotations

import asyncio

from cli.nats_server import NatsServer
from ingress.routing.breaker import Availability, Breaker, availability
from ingress.routing.health_board import HealthBoard
from schemas.config import RouterSettings
from schemas.errors import ErrorInfo, ErrorKind
from schemas.health import CircuitState, HealthEntry

SERVER = ErrorInfo.of(ErrorKind.SERVER, "boom")


def breaker(**settings: object) -> Breaker:
    values: dict[str, object] = {"allowed_fails": 2, "cooldown_time": 10, "fail_window": 60}
    return Breaker(RouterSettings.model_validate({**values, **settings}))


def fail_times(b: Breaker, times: list[float], error: ErrorInfo = SERVER) -> HealthEntry | None:
    entry: HealthEntry | None = None
    for t in times:
        entry = b.fail(entry, "d", error, t) or entry
    return entry


def test_more_than_allowed_fails_within_the_window_opens_for_the_cooldown() -> None:
    b = breaker()
    entry = fail_times(b, [100, 101])
    assert entry is not None and entry.state is CircuitState.CLOSED
    entry = b.fail(entry, "d", SERVER, 102)
    assert entry is not None and entry.state is CircuitState.OPEN
    assert entry.until == 112
    assert availability(entry, 111) is Availability.COOLING
    assert availability(entry, 112) is Availability.PROBE_READY


def test_failures_outside_the_window_do_not_count() -> None:
    entry = fail_times(breaker(), [0, 30, 61, 100])
    assert entry is not None and entry.state is CircuitState.CLOSED
    assert entry.fails == (61, 100)


def test_client_errors_never_count() -> None:
    b = breaker(allowed_fails=0)
    bad = ErrorInfo.of(ErrorKind.INVALID_REQUEST, "bad")
    assert b.fail(None, "d", bad, 0) is None
    assert b.fail(None, "d", ErrorInfo.of(ErrorKind.CONTEXT_LENGTH, "long"), 0) is None
    opened = b.fail(None, "d", ErrorInfo.of(ErrorKind.AUTHENTICATION, "key"), 0)
    assert opened is not None and opened.state is CircuitState.OPEN


def test_one_probe_after_the_cooldown_and_its_success_closes() -> None:
    b = breaker(allowed_fails=0)
    entry = b.fail(None, "d", SERVER, 0)
    assert b.probe(entry, 5) is None  # still cooling
    probing = b.probe(entry, 10)
    assert probing is not None and probing.state is CircuitState.HALF_OPEN
    assert availability(probing, 11) is Availability.PROBING
    assert b.probe(probing, 11) is None  # a second request does not probe too
    closed = b.succeed(probing, 12)
    assert closed is not None and closed.state is CircuitState.CLOSED
    assert availability(closed, 12) is Availability.HEALTHY


def test_a_failed_probe_opens_again_for_a_whole_cooldown() -> None:
    b = breaker(allowed_fails=0)
    probing = b.probe(b.fail(None, "d", SERVER, 0), 10)
    reopened = b.fail(probing, "d", SERVER, 13)
    assert reopened is not None and reopened.state is CircuitState.OPEN
    assert reopened.until == 23


def test_a_long_retry_after_stretches_the_cooldown() -> None:
    entry = breaker(allowed_fails=0).fail(
        None, "d", ErrorInfo.of(ErrorKind.RATE_LIMIT, "slow down", retry_after=30), 0)
    assert entry is not None and entry.until == 30


def test_success_on_a_closed_breaker_writes_nothing() -> None:
    b = breaker()
    assert b.succeed(None, 0) is None
    assert b.succeed(fail_times(b, [1]), 2) is None


def test_disabled_cooldowns_never_open() -> None:
    assert fail_times(breaker(disable_cooldowns=True), [1, 2, 3, 4, 5]) is None


async def test_two_boards_share_a_breaker_through_kv(nats_server: NatsServer) -> None:
    import nats

    clock = [1000.0]
    settings = RouterSettings(allowed_fails=1, cooldown_time=10)
    ncs = [await nats.connect(nats_server.url) for _ in range(2)]
    bucket = f"health_test_{id(clock)}"
    a, b = (HealthBoard(nc, settings, bucket=bucket, clock=lambda: clock[0]) for nc in ncs)
    try:
        await a.start()
        await b.start()
        a.failed("dep", SERVER)
        b.failed("dep", SERVER)  # each replica saw one failure: two in all
        await a.settle()
        await b.settle()
        await _until(lambda: a.availability("dep") is Availability.COOLING
                     and b.availability("dep") is Availability.COOLING)
        clock[0] += 10
        assert a.acquire("dep")  # a takes the probe...
        await a.settle()
        await _until(lambda: b.availability("dep") is Availability.PROBING)
        assert not b.acquire("dep")  # ...so b does not
        a.succeeded("dep")
        await a.settle()
        await _until(lambda: b.availability("dep") is Availability.HEALTHY)
    finally:
        for board in (a, b):
            await board.stop()
        for nc in ncs:
            await nc.close()


async def _until(check: object, timeout: float = 3.0) -> None:
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
