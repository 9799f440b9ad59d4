"""The accounting metrics against a real nats-server and ClickHouse: they count what the
usage API reports, and the lag gauges follow a stopped consumer's backlog."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from nats.aio.client import Client
from prometheus_client import REGISTRY

from accounting import analytics
from accounting.app import Accounting
from accounting.consumer import UsageConsumer
from accounting.metrics import OPERATIONS, LagWatch
from accounting.settings import AccountingSettings
from accounting.store import UsageStore
from cli.nats_server import NatsServer, free_port
from schemas import subjects
from schemas.analytics import AnalyticsQuery
from schemas.usage import UsageEvent, UsageStatus
from tests.accounting.test_consumer import publish, wait_for

TOKEN_TYPES = {"input": "prompt_tokens", "output": "completion_tokens",
               "cached_input": "cached_tokens", "reasoning": "reasoning_tokens"}
NAMES = (
    "aigw_accounting_events_inserted_total", "aigw_accounting_duplicates_dropped_total",
    "aigw_accounting_insert_duration_seconds_bucket", "aigw_accounting_pending_messages",
    "aigw_accounting_oldest_pending_age_seconds", "gen_ai_client_token_usage_bucket",
    "aigw_cost_usd_total", "aigw_nats_connected",
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def readings(events: Sequence[UsageEvent]) -> dict[str, float]:
    """The metrics as they stand, over every label set these events can make."""
    calls = {(OPERATIONS[e.endpoint], e.provider, e.model_alias) for e in events}
    out = {
        "inserted": sample("aigw_accounting_events_inserted_total"),
        "duplicates": sample("aigw_accounting_duplicates_dropped_total"),
        "cost": sum(sample("aigw_cost_usd_total", gen_ai_request_model=model, team=team)
                    for model, team in {(e.model_alias, e.team_id or "") for e in events}),
    }
    for kind in TOKEN_TYPES:
        for part in ("sum", "count"):
            out[f"{kind}_{part}"] = sum(
                sample(f"gen_ai_client_token_usage_{part}", gen_ai_operation_name=op,
                       gen_ai_provider_name=provider, gen_ai_request_model=model,
                       gen_ai_token_type=kind)
                for op, provider, model in calls)
    return out


def mixed_events(make: Callable[..., UsageEvent], count: int) -> list[UsageEvent]:
    """Every kind of event the gateway writes, under model names of this test's own."""
    run = uuid4().hex[:8]
    events = []
    for i in range(count):
        fields: dict[str, Any] = {
            "request_id": f"{run}-{i}", "model_alias": f"chat-{run}-{i % 2}",
            "provider": ("openai", "anthropic")[i % 2], "team_id": ("t1", "t2", None)[i % 3],
            "prompt_tokens": 100 + i, "completion_tokens": 3 * i,
            "cost": f"0.{(i * 7_919_777) % 10**9:09d}",
        }
        kind = i % 7
        if kind == 1:
            fields |= {"endpoint": "embeddings", "model_alias": f"embed-{run}",
                       "completion_tokens": 0}
        elif kind == 2:
            fields |= {"cached_tokens": 40 + i, "reasoning_tokens": 2 * i}
        elif kind == 3:  # failed before any token came back
            fields |= {"status": UsageStatus.ERROR, "prompt_tokens": 0,
                       "completion_tokens": 0, "cost": None, "http_status": 429}
        elif kind == 4:  # a stream the client left: billed for what it used
            fields |= {"status": UsageStatus.CANCELLED}
        elif kind == 5:  # refused by the gateway, as the ingress accounts it
            fields |= {"status": UsageStatus.REJECTED, "prompt_tokens": 0,
                       "completion_tokens": 0, "cost": None, "http_status": 429}
        elif kind == 6:  # served from the cache, as the ingress accounts it
            fields |= {"status": UsageStatus.CACHE_HIT, "prompt_tokens": 0,
                       "completion_tokens": 0, "cost": "0", "saved_cost": Decimal("0.01")}
        events.append(make(i, **fields))
    return events


async def test_counters_add_up_to_what_the_usage_summary_reports(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    events = mixed_events(event_factory, 60)
    before = readings(events)
    await publish(nc, events)
    # Re-published under new message ids: JetStream lets them through, the store drops them.
    for e in events[:9]:
        await publish(nc, [e], msg_id=f"again-{e.event_id}")
    consumer = UsageConsumer(nc, store, batch_size=25, batch_age=0.05)
    await consumer.start()
    try:
        await wait_for(lambda: consumer.stats.received >= 69)
    finally:
        await consumer.stop()
    after = readings(events)
    grew = {name: after[name] - before[name] for name in after}
    summary = analytics.summary(clickhouse, AnalyticsQuery(days=1))

    assert grew["inserted"] == 60
    assert grew["duplicates"] == 9
    assert summary["events"] == 60
    for kind, column in TOKEN_TYPES.items():
        assert grew[f"{kind}_sum"] == summary[column] > 0, kind
    assert abs(grew["cost"] - float(Decimal(summary["cost"]))) < 1e-9
    with_usage = [e for e in events if e.status in (UsageStatus.OK, UsageStatus.CANCELLED)]
    assert grew["input_count"] == grew["output_count"] == len(with_usage)
    assert grew["reasoning_count"] == sum(1 for e in events if e.reasoning_tokens)


async def test_lag_gauges_follow_the_backlog_of_a_stopped_consumer(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    js = nc.jetstream()
    first = UsageConsumer(nc, store, batch_age=0.05, ack_wait=2.0)
    await first.start()
    await first.stop()
    # Its last pull request must expire before events arrive, or they go to its gone inbox.
    deadline = asyncio.get_running_loop().time() + 10.0
    while (await js.consumer_info(subjects.USAGE_STREAM, first.durable)).num_waiting:
        assert asyncio.get_running_loop().time() < deadline, "the pull request never expired"
        await asyncio.sleep(0.02)
    watch = LagWatch(js, first.durable, every=0.05)
    watch.start()
    try:
        await publish(nc, [event_factory(i) for i in range(5)])
        await wait_for(lambda: sample("aigw_accounting_pending_messages") == 5
                       and sample("aigw_accounting_oldest_pending_age_seconds") > 0)
        second = UsageConsumer(nc, store, batch_age=0.05, ack_wait=2.0)
        await second.start()
        try:
            await wait_for(lambda: sample("aigw_accounting_pending_messages") == 0
                           and sample("aigw_accounting_oldest_pending_age_seconds") == 0)
        finally:
            await second.stop()
    finally:
        await watch.stop()
    assert second.stats.inserted == 5


async def test_the_accounting_process_serves_its_metrics_and_health_over_http(
    nc: Client, tmp_path: Path, nats_server: NatsServer,
    event_factory: Callable[..., UsageEvent],
) -> None:
    port = free_port()
    app = Accounting(AccountingSettings(
        NATS_URL=nats_server.url, AIGW_DATA_DIR=tmp_path, AIGW_ACCOUNTING_BATCH_AGE=0.05,
        AIGW_METRICS_PORT=port, AIGW_METRICS_HOST="127.0.0.1", AIGW_METRICS_KEY="scrape-key",
        AIGW_ACCOUNTING_LAG_INTERVAL=0.05,
    ))
    await app.start()
    try:
        await publish(nc, [event_factory(i, team_id="t1") for i in range(3)])
        await wait_for(lambda: app.consumer is not None and app.consumer.stats.inserted == 3)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            refused = await http.get("/metrics")
            scraped = await http.get("/metrics", headers={"authorization": "Bearer scrape-key"})
            live = await http.get("/health/liveliness")
            ready = await http.get("/health/readiness")
    finally:
        await app.stop()
    assert refused.status_code == 401
    assert scraped.status_code == 200
    for name in NAMES:
        assert f"\n{name}" in scraped.text, name
    assert "\naigw_nats_connected 1.0\n" in scraped.text
    assert (live.status_code, ready.status_code) == (200, 200)
