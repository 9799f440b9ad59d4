from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accounting import analytics
from accounting.store import UsageStore
from schemas.analytics import AnalyticsQuery
from schemas.usage import UsageEvent, UsageStatus


@pytest.fixture
def now() -> datetime:
    # Inside the TTL, so the rows stay; fixed, so the numbers below are exact.
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def loaded(store: UsageStore, event_factory: Callable[..., UsageEvent], now: datetime) -> Any:
    today, yesterday = now, now - timedelta(days=1)
    ev = event_factory
    events = [
        # r1: failed on openai, then served by anthropic: 1 request, both costs
        ev(1, attempt=0, status=UsageStatus.ERROR, ts=today, key_id="k1", team_id="t1",
           provider="openai", cost="0.000100000", prompt_tokens=100, completion_tokens=0,
           latency_ms=50.0),
        ev(1, attempt=1, ts=today + timedelta(seconds=1), key_id="k1", team_id="t1",
           provider="anthropic", cost="0.002000000", prompt_tokens=100, completion_tokens=40,
           latency_ms=300.0, end_user="alice"),
        # r2: ok
        ev(2, ts=today, key_id="k2", team_id="t1", model_alias="gpt-4.1", cost="0.010000000",
           prompt_tokens=1000, completion_tokens=200, latency_ms=100.0),
        # r3: cache hit, saved money
        ev(3, ts=today, key_id="k2", team_id="t2", status=UsageStatus.CACHE_HIT, cost="0",
           saved_cost="0.003000000", latency_ms=2.0),
        # r4: rejected
        ev(4, ts=today, key_id="k3", team_id="t2", status=UsageStatus.REJECTED, cost=None,
           prompt_tokens=0, completion_tokens=0),
        # r5: yesterday, ok
        ev(5, ts=yesterday, key_id="k1", team_id="t1", cost="0.000000001", latency_ms=200.0),
    ]
    store.insert(events, "known")
    return store.client


def test_summary_counts_requests_once_and_adds_every_attempts_cost(
    loaded: Any, now: datetime
) -> None:
    s = analytics.summary(loaded, AnalyticsQuery(days=2), now=now)
    assert s["requests"] == 5
    assert s["events"] == 6
    assert s["attempts"] == {"ok": 3, "error": 1, "cancelled": 0, "cache_hit": 1, "rejected": 1}
    assert s["by_status"] == {"ok": 3, "error": 0, "cancelled": 0, "cache_hit": 1,
                              "rejected": 1}
    assert s["cost"] == "0.012100001"
    assert s["saved_cost"] == "0.003000000"
    assert s["cache_hits"] == 1
    assert s["prompt_tokens"] == 100 + 100 + 1000 + 10 + 0 + 10
    assert s["error_rate"] == 0.0
    assert s["success_rate"] == 4 / 5
    assert s["latency_ms"] == {"avg": 200.0, "p50": 200.0, "p95": 300.0}
    assert s["range"] == {"start": (now - timedelta(days=1)).strftime("%Y-%m-%dT00:00:00.000Z"),
                          "end": (now + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00.000Z")}


def test_summary_filters_by_key_and_range(loaded: Any, now: datetime) -> None:
    s = analytics.summary(loaded, AnalyticsQuery(days=1, key_id="k1"), now=now)
    assert (s["requests"], s["cost"]) == (1, "0.002100000")
    start = (now - timedelta(days=1)).date()
    s = analytics.summary(loaded, AnalyticsQuery(start=start, end=now.date()), now=now)
    assert (s["requests"], s["cost"]) == (1, "0.000000001")


def test_summary_of_nothing_is_zero_not_nan(clickhouse: Any, now: datetime) -> None:
    s = analytics.summary(clickhouse, AnalyticsQuery(days=1), now=now)
    assert (s["requests"], s["cost"], s["error_rate"]) == (0, "0.000000000", None)
    assert s["latency_ms"] == {"avg": None, "p50": None, "p95": None}


def test_breakdown_by_provider_and_by_team(loaded: Any, now: datetime) -> None:
    b = analytics.breakdown(loaded, AnalyticsQuery(days=2, by="provider"), now=now)
    rows = {r["provider"]: (r["requests"], r["cost"]) for r in b["data"]}
    # r1 counts once under each provider its attempts went to
    assert rows == {"openai": (5, "0.010100001"), "anthropic": (1, "0.002000000")}
    b = analytics.breakdown(loaded, AnalyticsQuery(days=2, by="team"), now=now)
    assert [(r["team"], r["requests"], r["cost"]) for r in b["data"]] == [
        ("t1", 3, "0.012100001"), ("t2", 2, "0.000000000"),
    ]
    b = analytics.breakdown(loaded, AnalyticsQuery(days=2, by="user"), now=now)
    assert {r["user"]: r["requests"] for r in b["data"]} == {"alice": 1, None: 5}


def test_daily_from_the_rollup(loaded: Any, now: datetime) -> None:
    d = analytics.daily(loaded, AnalyticsQuery(days=2), now=now)
    assert [(r["day"], r["requests"], r["events"], r["cost"]) for r in d["data"]] == [
        ((now - timedelta(days=1)).date().isoformat(), 1, 1, "0.000000001"),
        (now.date().isoformat(), 4, 5, "0.012100000"),
    ]
    d = analytics.daily(loaded, AnalyticsQuery(days=2, team_id="t2"), now=now)
    assert [(r["requests"], r["saved_cost"]) for r in d["data"]] == [(2, "0.003000000")]


def test_logs_are_newest_first_and_paged(loaded: Any, now: datetime) -> None:
    page = analytics.logs(loaded, AnalyticsQuery(days=2, limit=2), now=now)
    assert [e["event_id"] for e in page["data"]] == ["req-1:1:worker", "req-4:0:worker"]
    assert page["has_more"] is True
    assert page["data"][0]["cost"] == "0.002000000"
    assert page["data"][0]["end_user"] == "alice"
    for entry in page["data"]:  # one width, so that stamps order as text
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]), entry
    last = analytics.logs(loaded, AnalyticsQuery(days=2, limit=2, offset=4), now=now)
    assert [e["event_id"] for e in last["data"]] == ["req-1:0:worker", "req-5:0:worker"]
    assert last["has_more"] is False
    assert last["data"][1]["key_id"] == "k1"


@pytest.mark.parametrize("params", [
    {"days": 0}, {"days": 1, "start": "2026-01-01"}, {"end": "2026-01-01"},
    {"start": "2026-01-02", "end": "2026-01-01"}, {"by": "colour"}, {"limit": 5000},
    {"unknown": 1},
])
def test_bad_queries_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError is one
        AnalyticsQuery.model_validate(params)
