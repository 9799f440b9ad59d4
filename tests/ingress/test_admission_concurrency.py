"""Admission under concurrency and across replicas: a budget never overcommitted, one limit
shared by two replicas, a flushed Lua script cache, and Redis deciding as the local store."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

from ingress.admission import (
    Admission,
    LocalAdmission,
    RedisAdmission,
    Reservation,
    Scope,
)
from tests.ingress.admission_fixtures import (
    USD,
    admission_store,  # noqa: F401 - the ``admission`` fixture, one per store
    ask,
    at,
    redis_client,
    reservation,
    spent,
    uid,
)
from tests.redis_server import RedisServer


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
