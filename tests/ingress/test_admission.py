"""Admission behaviour, run against both stores: Redis (a real server) and in-process.

Every test uses its own scope ids (and, for Redis, its own key namespace), and an
injected clock that starts on a minute boundary, so windows are deterministic.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import httpx
import pytest
import redis.asyncio as aioredis

from ingress.admission import (
    Admission,
    AdmissionPolicy,
    AdmissionUnavailable,
    AdmitRequest,
    Decision,
    DuplicateRequest,
    Limit,
    LocalAdmission,
    RedisAdmission,
    Reservation,
    ResilientAdmission,
    Scope,
    refusal_error,
    window,
)
from ingress.admission.alerts import BudgetAlerts
from ingress.admission.redis_impl import connect
from tests.redis_server import RedisServer

# A minute boundary, near the real clock so Redis key TTLs (real time) outlive the test.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
USD = Decimal
ZERO = Decimal(0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def uid() -> str:
    return uuid4().hex[:12]


def redis_client(server: RedisServer) -> aioredis.Redis:
    return connect(server.url, max_connections=16, timeout=2.0)


@pytest.fixture(params=["redis", "local"])
async def admission(request: pytest.FixtureRequest) -> AsyncIterator[Admission]:
    if request.param == "local":
        yield LocalAdmission()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis_client(server)
    store = RedisAdmission(client, namespace=f"test:{uid()}:")
    await store.load()
    yield store
    await client.aclose()


def ask(
    scopes: list[Scope],
    seconds: float = 0,
    tokens: int = 10,
    reserve: Decimal = ZERO,
    request_id: str | None = None,
) -> AdmitRequest:
    return AdmitRequest(request_id or uid(), scopes, tokens, reserve, now=at(seconds))


def reservation(decision: Decision) -> Reservation:
    assert decision.allowed, decision.reason
    assert decision.reservation is not None
    return decision.reservation


async def spent(admission: Admission, scope: Scope, seconds: float = 0) -> dict[str, Any]:
    status = await admission.status([scope], now=at(seconds))
    entry: dict[str, Any] = status["scopes"][0]
    return entry


# --- rate limits ---------------------------------------------------------------------


async def test_rpm_refuses_the_request_past_the_limit_with_retry_after(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=3, label="ci-bot")
    for _ in range(3):
        assert (await admission.admit(ask([key], 10))).allowed
    refused = await admission.admit(ask([key], 10))
    assert not refused.allowed
    assert refused.refusal is not None
    assert refused.refusal.limit is Limit.REQUESTS
    assert refused.reason == "key ci-bot: requests"
    # All three in the current bucket: roll over (50 s), then decay until 3*(1-t/60)+1 <= 3.
    assert refused.retry_after == 70.0
    assert refused.headers["retry-after"] == "70"
    assert not (await admission.admit(ask([key], 79.999))).allowed
    assert (await admission.admit(ask([key], 80))).allowed


async def test_sliding_window_blocks_a_burst_across_the_minute_boundary(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=10)
    for _ in range(10):
        assert (await admission.admit(ask([key], 59))).allowed
    # A fixed window would allow ten more at 60 s; the previous minute still weighs 10.
    assert not (await admission.admit(ask([key], 61))).allowed
    # Halfway through the next minute half of it has slid out.
    allowed = [(await admission.admit(ask([key], 90))).allowed for _ in range(7)]
    assert allowed == [True] * 5 + [False] * 2


async def test_tpm_reserves_the_estimate_and_settle_corrects_it(admission: Admission) -> None:
    key = Scope("key", uid(), tpm=1000)
    first = await admission.admit(ask([key], 5, tokens=400))
    assert (await admission.admit(ask([key], 5, tokens=400))).allowed
    third = await admission.admit(ask([key], 6, tokens=400))
    assert not third.allowed
    assert third.refusal is not None
    assert third.refusal.limit is Limit.TOKENS
    assert third.refusal.used == 800
    assert third.refusal.requested == 400
    assert third.retry_after is not None and third.retry_after > 0
    # The first request used 100 tokens, not 400: 300 come back.
    assert (await admission.settle(reservation(first), 100, None, now=at(7))).settled
    again = await admission.admit(ask([key], 8, tokens=400))
    assert again.allowed
    assert again.headers["x-ratelimit-remaining-tokens"] == "100"


async def test_a_request_larger_than_the_tpm_limit_is_told_not_to_retry(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), tpm=100)
    refused = await admission.admit(ask([key], 0, tokens=101))
    assert refused.refusal is not None
    assert refused.refusal.limit is Limit.TOKENS
    assert refused.retry_after is None
    assert refused.headers["x-should-retry"] == "false"
    error = refusal_error(refused)
    assert error.status == 429
    assert error.type == "tokens"
    assert "alone exceeds the limit" in error.message


async def test_max_parallel_holds_a_slot_until_settle_or_expiry(admission: Admission) -> None:
    key = Scope("key", uid(), max_parallel=2)
    one = await admission.admit(ask([key], 0))
    assert (await admission.admit(ask([key], 0))).allowed
    third = await admission.admit(ask([key], 1))
    assert third.refusal is not None
    assert third.refusal.limit is Limit.PARALLEL
    assert third.refusal.used == 2
    assert third.retry_after == 1.0
    assert refusal_error(third).type == "requests"
    await admission.settle(reservation(one), 10, USD(0), now=at(2))
    assert (await admission.admit(ask([key], 2))).allowed
    assert not (await admission.admit(ask([key], 3))).allowed
    # Nobody settles: a crashed ingress. The slots free after the hold ttl (15 min).
    hold = AdmissionPolicy().hold_ttl.total_seconds()
    assert not (await admission.admit(ask([key], hold - 1))).allowed
    assert (await admission.admit(ask([key], hold + 3))).allowed


async def test_the_first_refusing_scope_is_reported_and_nothing_is_counted(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=100, tpm=10_000)
    team = Scope("team", uid(), rpm=1, label="search")
    assert (await admission.admit(ask([key, team], 0, tokens=100))).allowed
    refused = await admission.admit(ask([key, team], 1, tokens=100))
    assert refused.reason == "team search: requests"
    status = await admission.status([key], now=at(1))
    # The refused request left no trace on the key that would have let it through.
    assert status["scopes"][0]["requests"]["used"] == 1
    assert status["scopes"][0]["tokens"]["used"] == 100


async def test_a_request_id_cannot_hold_two_reservations(admission: Admission) -> None:
    key = Scope("key", uid(), max_parallel=5)
    rid = uid()
    first = await admission.admit(ask([key], 0, request_id=rid))
    with pytest.raises(DuplicateRequest):
        await admission.admit(ask([key], 1, request_id=rid))
    await admission.settle(reservation(first), 10, None, now=at(2))
    assert (await admission.admit(ask([key], 3, request_id=rid))).allowed


# --- headers -------------------------------------------------------------------------

GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


async def test_headers_describe_the_tightest_scope_in_openai_format(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=60, tpm=1000)
    team = Scope("team", uid(), rpm=500, tpm=400)
    decision = await admission.admit(ask([key, team], 15, tokens=100))
    assert decision.headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        # Back to a full window once this minute rolls over and the next one passes.
        "x-ratelimit-reset-requests": "1m45s",
        "x-ratelimit-limit-tokens": "400",
        "x-ratelimit-remaining-tokens": "300",
        "x-ratelimit-reset-tokens": "1m45s",
    }
    assert all(GO_DURATION.match(v) for k, v in decision.headers.items() if "reset" in k)
    refused = await admission.admit(ask([key, team], 16, tokens=350))
    assert refused.headers["x-ratelimit-remaining-tokens"] == "300"
    assert refused.headers["retry-after"] == str(int(refused.headers["retry-after"]))
    assert int(refused.headers["retry-after-ms"]) > 0


async def test_scopes_without_rate_limits_send_no_rate_limit_headers(
    admission: Admission,
) -> None:
    decision = await admission.admit(ask([Scope("key", uid())], 0))
    assert decision.allowed
    assert decision.headers == {}


# --- budgets -------------------------------------------------------------------------


async def test_daily_budget_counts_spend_and_reservations(admission: Admission) -> None:
    key = Scope("key", uid(), daily_budget=USD("1.00"), label="ci-bot")
    held = [await admission.admit(ask([key], 0, reserve=USD("0.30"))) for _ in range(3)]
    assert all(d.allowed for d in held)
    fourth = await admission.admit(ask([key], 1, reserve=USD("0.30")))
    assert fourth.refusal is not None
    assert fourth.refusal.limit is Limit.DAILY_BUDGET
    assert fourth.refusal.reserved == USD("0.9")
    # Only reservations of requests in flight stand in the way: retry soon.
    assert fourth.retry_after == 1.0
    await admission.settle(reservation(held[0]), 10, USD("0.10"), now=at(2))
    assert (await admission.admit(ask([key], 3, reserve=USD("0.30")))).allowed
    entry = await spent(admission, key, 3)
    assert entry["daily"]["spent"] == "0.100000000"
    assert entry["daily"]["reserved"] == "0.900000000"
    assert entry["daily"]["remaining"] == "0.000000000"


async def test_a_spent_daily_budget_refuses_until_midnight(admission: Admission) -> None:
    key = Scope("key", uid(), daily_budget=USD("1.00"), label="ci-bot")
    first = await admission.admit(ask([key], 0, reserve=USD("1.00")))
    await admission.settle(reservation(first), 10, USD("1.00"), now=at(1))
    # Even a request that reserves nothing (unknown price) is refused now.
    refused = await admission.admit(ask([key], 2, reserve=USD(0)))
    assert refused.refusal is not None
    assert refused.refusal.limit is Limit.DAILY_BUDGET
    midnight = (T0 + timedelta(days=1)).replace(hour=0, minute=0)
    assert refused.refusal.resets_at == midnight
    assert refused.retry_after == (midnight - at(2)).total_seconds()
    assert refused.headers["x-should-retry"] == "false"
    error = refusal_error(refused)
    assert (error.status, error.type, error.code) == (429, "insufficient_quota", "budget_exceeded")
    assert error.message == (
        "Budget exceeded: key ci-bot daily budget $1.00 (spent $1.00); "
        f"resets at {midnight:%Y-%m-%dT%H:%M:%S}Z"
    )
    tomorrow = (midnight - T0).total_seconds() + 1
    assert (await admission.admit(ask([key], tomorrow, reserve=USD("0.5")))).allowed


async def test_monthly_budget_spans_days(admission: Admission) -> None:
    start = T0.replace(day=1, hour=12, minute=0)
    offset = (start - T0).total_seconds()
    team = Scope("team", uid(), daily_budget=USD(3), monthly_budget=USD(5))
    for day in range(2):
        seconds = offset + day * 86_400
        d = await admission.admit(ask([team], seconds, reserve=USD("2.5")))
        await admission.settle(reservation(d), 10, USD("2.5"), now=at(seconds + 1))
    third = offset + 2 * 86_400
    refused = await admission.admit(ask([team], third, reserve=USD("0.01")))
    assert refused.refusal is not None
    assert refused.refusal.limit is Limit.MONTHLY_BUDGET
    assert refused.refusal.resets_at is not None
    assert refused.refusal.resets_at.day == 1
    assert refused.refusal.resets_at.month != start.month


async def test_a_reservation_larger_than_the_budget_can_never_fit(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), daily_budget=USD("0.10"))
    refused = await admission.admit(ask([key], 0, reserve=USD("0.11")))
    assert refused.retry_after is None
    assert "this request may cost up to $0.11" in refusal_error(refused).message


async def test_settle_is_idempotent(admission: Admission) -> None:
    key = Scope("key", uid(), tpm=1000, max_parallel=1, daily_budget=USD(10))
    held = reservation(await admission.admit(ask([key], 0, tokens=500, reserve=USD(1))))
    assert (await admission.settle(held, 200, USD("0.25"), now=at(1))).settled
    assert not (await admission.settle(held, 200, USD("0.25"), now=at(2))).settled
    entry = await spent(admission, key, 3)
    assert entry["daily"]["spent"] == "0.250000000"
    assert entry["daily"]["reserved"] == "0.000000000"
    assert entry["tokens"]["used"] == 200
    assert entry["parallel"]["in_flight"] == 0


async def test_unknown_cost_releases_the_reservation_and_adds_nothing(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), daily_budget=USD(1))
    held = reservation(await admission.admit(ask([key], 0, reserve=USD("0.5"))))
    assert (await admission.settle(held, 10, None, now=at(1))).settled
    entry = await spent(admission, key, 2)
    assert Decimal(entry["daily"]["spent"]) == 0
    assert Decimal(entry["daily"]["reserved"]) == 0


async def test_a_late_settle_still_records_spend_once(admission: Admission) -> None:
    key = Scope("key", uid(), daily_budget=USD(1), max_parallel=1)
    held = reservation(await admission.admit(ask([key], 0, reserve=USD("0.5"))))
    # The hold expired (and was purged by a new admission) before the request ended.
    late = AdmissionPolicy().hold_ttl.total_seconds() + 60
    other = reservation(await admission.admit(ask([key], late, reserve=USD("0.1"))))
    assert (await admission.settle(held, 10, USD("0.2"), now=at(late + 1))).settled
    entry = await spent(admission, key, late + 2)
    assert entry["daily"]["spent"] == "0.200000000"
    # The purged hold is not released a second time: the other request's stays.
    assert entry["daily"]["reserved"] == "0.100000000"
    await admission.settle(other, 10, USD("0.1"), now=at(late + 3))
    # Past the settle ttl a reservation is gone for good.
    gone = reservation(await admission.admit(ask([key], late + 4, reserve=USD("0.1"))))
    settle_ttl = AdmissionPolicy().settle_ttl.total_seconds()
    assert not (await admission.settle(gone, 10, USD("0.1"), now=at(late + 5 + settle_ttl))).settled


async def test_seed_spend_raises_a_counter_and_never_lowers_it(admission: Admission) -> None:
    key = Scope("key", uid(), daily_budget=USD(1), monthly_budget=USD(20))
    day = T0.strftime("%Y%m%d")
    assert await admission.seed_spend("key", key.id, day, USD("0.75"))
    assert not await admission.seed_spend("key", key.id, day, USD("0.10"))
    assert not await admission.seed_spend("key", key.id, day, USD("0.75"))
    # spend the counter never saw (a batch) and ClickHouse did: raised to its figure
    assert await admission.seed_spend("key", key.id, day, USD("0.95"))
    assert await admission.seed_spend("key", key.id, T0.strftime("%Y%m"), USD("7"))
    refused = await admission.admit(ask([key], 0, reserve=USD("0.10")))
    assert refused.reason == f"key {key.id}: daily_budget"
    entry = await spent(admission, key, 0)
    assert entry["daily"]["spent"] == "0.950000000"
    assert entry["monthly"]["spent"] == "7.000000000"
    with pytest.raises(ValueError, match="YYYYMMDD"):
        await admission.seed_spend("key", key.id, "2026-11", USD(1))


async def test_big_amounts_stay_exact(admission: Admission) -> None:
    key = Scope("team", uid(), monthly_budget=USD("5000000"))
    cost = USD("1234567.123456789")
    held = reservation(await admission.admit(ask([key], 0, reserve=USD("2000000.000000001"))))
    await admission.settle(held, 10, cost, now=at(1))
    entry = await spent(admission, key, 2)
    assert Decimal(entry["monthly"]["spent"]) == cost


async def test_thresholds_alert_once_per_period(admission: Admission) -> None:
    key = Scope("key", uid(), daily_budget=USD(10), monthly_budget=USD(20))
    costs = [USD("4.99"), USD("0.01"), USD("3"), USD("0.5"), USD("1.5")]
    fired = []
    for i, cost in enumerate(costs):
        held = reservation(await admission.admit(ask([key], i * 2, reserve=USD("1.5"))))
        result = await admission.settle(held, 10, cost, now=at(i * 2 + 1))
        fired.append([(a.period, a.threshold, str(a.spend)) for a in result.alerts])
    assert fired == [
        [],
        [("daily", 50, "5.000000000")],
        [("daily", 80, "8.000000000")],
        [],
        [("daily", 100, "10.000000000"), ("monthly", 50, "10.000000000")],
    ]


# --- concurrency ---------------------------------------------------------------------


async def test_concurrent_admissions_never_commit_more_than_the_budget(
    admission: Admission,
) -> None:
    budget = USD("1.00")
    key = Scope("key", uid(), daily_budget=budget)
    rng = random.Random(20261122)
    costs: list[Decimal] = []
    largest = USD(0)
    violations: list[str] = []
    done = asyncio.Event()

    async def client(i: int) -> None:
        nonlocal largest
        for round_ in range(4):
            reserve = USD(rng.randint(1, 100)) / 1000
            largest = max(largest, reserve)
            cost = (reserve * rng.randint(0, 100) / 100).quantize(USD("1e-9"))
            decision = await admission.admit(ask([key], 0, reserve=reserve,
                                                 request_id=f"{i}-{round_}"))
            if not decision.allowed:
                continue
            await asyncio.sleep(rng.random() * 0.01)
            assert (await admission.settle(reservation(decision), 10, cost, now=at(0))).settled
            costs.append(cost)

    async def watch() -> None:
        # Spent plus reserved is the budget's commitment; it must never pass the budget.
        while not done.is_set():
            daily = (await spent(admission, key))["daily"]
            committed = Decimal(daily["spent"]) + Decimal(daily["reserved"])
            if committed > budget:
                violations.append(f"{daily}")
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(client(i) for i in range(100)))
    done.set()
    await watcher
    daily = (await spent(admission, key))["daily"]
    assert violations == []
    assert Decimal(daily["spent"]) == sum(costs)
    assert Decimal(daily["spent"]) <= budget <= budget + largest
    assert Decimal(daily["reserved"]) == 0
    assert len(costs) > 10


async def test_two_replicas_share_one_limit(redis_server: RedisServer) -> None:
    namespace = f"test:{uid()}:"
    clients = [redis_client(redis_server), redis_client(redis_server)]
    replicas = [RedisAdmission(c, namespace=namespace) for c in clients]
    key = Scope("key", uid(), rpm=10, max_parallel=1000)
    decisions = await asyncio.gather(*(
        replicas[i % 2].admit(ask([key], 1)) for i in range(40)
    ))
    assert sum(d.allowed for d in decisions) == 10
    # Both replicas see the same counters.
    for replica in replicas:
        assert (await replica.status([key], now=at(1)))["scopes"][0]["requests"]["used"] == 10
    for c in clients:
        await c.aclose()


async def test_a_flushed_script_cache_is_reloaded(redis_server: RedisServer) -> None:
    client = redis_client(redis_server)
    store = RedisAdmission(client, namespace=f"test:{uid()}:")
    key = Scope("key", uid(), rpm=5)
    assert (await store.admit(ask([key], 0))).allowed
    await client.script_flush()
    assert (await store.admit(ask([key], 1))).allowed
    await client.aclose()


async def test_redis_and_local_decide_alike(redis_server: RedisServer) -> None:
    """The Lua scripts mirror the Python store: a random workload gets the same answers."""
    client = redis_client(redis_server)
    stores: list[Admission] = [RedisAdmission(client, namespace=f"test:{uid()}:"),
                               LocalAdmission()]
    rng = random.Random(7)
    scopes = [
        Scope("key", "k1", rpm=6, tpm=3000, max_parallel=4, daily_budget=USD("4")),
        Scope("team", "t1", rpm=12, tpm=5000, monthly_budget=USD("6")),
        Scope("deployment", "d1", rpm=20, max_parallel=3),
    ]
    held: list[list[Reservation]] = [[], []]
    seen: set[str] = set()
    seconds = 0.0
    for step in range(400):
        seconds += rng.choice([0, 0, 0.5, 3, 11])
        if held[0] and rng.random() < 0.45:
            index = rng.randrange(len(held[0]))
            # Real costs stay within their reservation.
            share = USD(rng.choice([0, 2, 5, 10])) / 10
            tokens, cost = rng.randint(0, 900), share * held[0][index].reserve_nanos / 10**9
            settled = [
                await store.settle(pending.pop(index), tokens, cost, now=at(seconds))
                for store, pending in zip(stores, held, strict=True)
            ]
            assert settled[0] == settled[1], step
            seen.add("settled" if settled[0].settled else "stale")
            seen.update(f"alert {a.period} {a.threshold}" for a in settled[0].alerts)
            continue
        picked = [s for s in scopes if rng.random() < 0.7] or scopes[:1]
        request = ask(picked, seconds, tokens=rng.randint(1, 800),
                      reserve=USD(rng.randint(0, 50)) / 100, request_id=f"r{step}")
        decisions = [await store.admit(request) for store in stores]
        ours, theirs = decisions
        assert (ours.allowed, ours.refusal, ours.headers, ours.alerts) == (
            theirs.allowed, theirs.refusal, theirs.headers, theirs.alerts), step
        seen.add(ours.refusal.limit.value if ours.refusal else "allowed")
        if ours.allowed:
            for pending, decision in zip(held, decisions, strict=True):
                pending.append(reservation(decision))
        status = [await store.status(scopes, now=at(seconds)) for store in stores]
        assert status[0] == status[1], step
    await client.aclose()
    # The workload reached every kind of outcome, so the comparison meant something.
    assert {"allowed", "settled", "requests", "tokens", "parallel", "daily_budget",
            "monthly_budget", "alert daily 50", "alert monthly 80"} <= seen, seen


# --- Redis down ----------------------------------------------------------------------


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


# --- alert webhook -------------------------------------------------------------------


async def test_budget_alerts_post_json_to_the_webhook(admission: Admission) -> None:
    received: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(500 if len(received) > 1 else 204)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    alerts = BudgetAlerts("http://hooks.test/budget", http)
    key = Scope("key", uid(), daily_budget=USD(1), label="ci-bot")
    held = reservation(await admission.admit(ask([key], 0, reserve=USD(1))))
    result = await admission.settle(held, 10, USD("0.85"), now=at(1))
    alerts.fire(result.alerts)
    await alerts.aclose()
    await http.aclose()
    assert [r["threshold_percent"] for r in received] == [50, 80]
    assert received[0]["scope"] == {"kind": "key", "id": key.id, "label": "ci-bot"}
    assert received[0]["spend"] == "0.850000000"
    assert received[0]["budget"] == "1"


# --- window arithmetic ---------------------------------------------------------------


@pytest.mark.parametrize(("ms", "text"), [
    (0, "0s"), (12, "12ms"), (1000, "1s"), (26_604, "26.604s"), (61_500, "1m1.5s"),
    (360_000, "6m0s"), (3_600_000, "1h0m0s"),
])
def test_go_duration_matches_go(ms: int, text: str) -> None:
    assert window.go_duration(ms) == text


def test_retry_ms_is_the_first_moment_the_request_fits() -> None:
    w = window.WINDOW_MS

    def fits_after(prev: int, curr: int, elapsed: int, cost: int, limit: int, t: int) -> bool:
        at_ms = elapsed + t
        if at_ms < w:
            return window.fits(prev, curr, at_ms, cost, limit)
        return window.fits(curr, 0, at_ms - w, cost, limit)

    rng = random.Random(3)
    for _ in range(2000):
        limit = rng.randint(1, 50)
        prev, curr = rng.randint(0, 60), rng.randint(0, 60)
        elapsed, cost = rng.randrange(w), rng.randint(1, limit)
        t = window.retry_ms(prev, curr, elapsed, cost, limit)
        assert t is not None
        assert fits_after(prev, curr, elapsed, cost, limit, t)
        assert t == 0 or not fits_after(prev, curr, elapsed, cost, limit, t - 1)
    assert window.retry_ms(0, 0, 0, 11, 10) is None
