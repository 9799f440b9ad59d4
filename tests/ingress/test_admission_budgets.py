"""Admission budgets: daily and monthly spend with reservations, settling, seeded spend,
exact amounts, threshold alerts and the alert webhook.

Run against both stores, Redis (a real server) and in-process, each test with its own
scope ids and a clock that starts on a minute boundary."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ingress.admission import (
    Admission,
    AdmissionPolicy,
    Limit,
    Scope,
    refusal_error,
)
from ingress.admission.alerts import BudgetAlerts
from tests.ingress.admission_fixtures import (
    T0,
    USD,
    admission_store,  # noqa: F401 - the ``admission`` fixture, one per store
    ask,
    at,
    reservation,
    spent,
    uid,
)

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
