from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from accounting.app import Accounting
from accounting.consumer import DURABLE, UsageConsumer
from accounting.service import analytics_subject
from accounting.settings import AccountingSettings
from accounting.store import EventKey, UsageStore
from schemas import subjects
from schemas.event_message import group_id, join_events
from schemas.usage import UsageEvent


async def publish(nc: Client, events: Sequence[UsageEvent], msg_id: str | None = None) -> None:
    js = nc.jetstream()
    for e in events:
        await js.publish(subjects.usage(e.provider), e.model_dump_json().encode(),
                         headers={"Nats-Msg-Id": msg_id or e.event_id})


async def publish_group(nc: Client, bodies: Sequence[bytes], provider: str = "openai") -> None:
    """One message of several events, as a publisher under load sends them."""
    ids = [json.loads(b).get("event_id", b.decode()) for b in bodies]
    await nc.jetstream().publish(subjects.usage(provider), join_events(bodies),
                                 headers={"Nats-Msg-Id": group_id(ids)})


async def settled(nc: Client) -> bool:
    """Whether the accounting consumer has every message acked or terminated."""
    info = await nc.jetstream().consumer_info(subjects.USAGE_STREAM, DURABLE)
    return not info.num_pending and not info.num_ack_pending


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def totals(client: Any) -> tuple[int, int, Decimal]:
    row = client.query(
        "SELECT count(), uniqExact(event_id), sum(cost) FROM usage_events"
    ).result_rows[0]
    return int(row[0]), int(row[1]), row[2]


class SlowStore:
    """Our real store, slowed down so a test can stop the consumer between batches."""

    def __init__(self, store: UsageStore, delay: float) -> None:
        self.store = store
        self.delay = delay
        self.calls = 0

    def insert(
        self, events: Sequence[UsageEvent | EventKey], token: str | None = None,
        bodies: Sequence[bytes] | None = None,
    ) -> int:
        self.calls += 1
        time.sleep(self.delay)
        return self.store.insert(events, token, bodies)


class FailingStore:
    """Stands in for a ClickHouse outage: the first ``failures`` inserts raise.

    A real outage is not practical to stage with chDB (it runs inside this process and a
    store cannot be made unwritable and writable again), so this wrapper of our own code
    fails the way clickhouse-connect does when the server is away.
    """

    def __init__(self, store: UsageStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.calls = 0

    def insert(
        self, events: Sequence[UsageEvent | EventKey], token: str | None = None,
        bodies: Sequence[bytes] | None = None,
    ) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("ClickHouse is unavailable")
        return self.store.insert(events, token, bodies)


async def test_every_event_lands_exactly_once_with_exact_cost(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    events = [event_factory(i, cost=f"0.00000{i % 10}123") for i in range(500)]
    await publish(nc, events)
    await publish(nc, events[:50])  # re-published inside the window: JetStream drops them
    # Re-published after the window (a new Nats-Msg-Id): ClickHouse-side dedup drops them.
    for e in events[50:60]:
        await publish(nc, [e], msg_id=f"late-{e.event_id}")
    consumer = UsageConsumer(nc, store, batch_size=100, batch_age=0.1)
    await consumer.start()
    try:
        await wait_for(lambda: consumer.stats.received >= 510)
    finally:
        await consumer.stop()
    expected_cost = sum((e.cost for e in events if e.cost is not None), Decimal(0))
    assert totals(clickhouse) == (500, 500, expected_cost)
    assert consumer.stats.inserted == 500
    assert consumer.stats.duplicates == 10


async def test_a_batch_waits_no_longer_than_its_age(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    consumer = UsageConsumer(nc, store, batch_size=10_000, batch_age=0.2)
    await consumer.start()
    try:
        await publish(nc, [event_factory(i) for i in range(3)])
        await wait_for(lambda: consumer.stats.inserted == 3, timeout=3.0)
    finally:
        await consumer.stop()
    assert consumer.stats.batches == 1


async def test_stopping_mid_way_and_restarting_loses_and_duplicates_nothing(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    events = [event_factory(i, cost="0.000000007") for i in range(1000)]
    await publish(nc, events)
    slow = SlowStore(store, delay=0.05)
    first = UsageConsumer(nc, slow, batch_size=50, batch_age=0.05)
    await first.start()
    await wait_for(lambda: slow.calls >= 3)
    await first.stop()
    stored_at_stop = totals(clickhouse)[0]
    assert 0 < stored_at_stop < 1000
    assert first.stats.received == stored_at_stop  # whatever was taken was written

    second = UsageConsumer(nc, store, batch_size=200, batch_age=0.05)
    await second.start()
    try:
        await wait_for(lambda: totals(clickhouse)[0] >= 1000)
        await asyncio.sleep(0.3)  # anything extra would show up now
    finally:
        await second.stop()
    assert totals(clickhouse) == (1000, 1000, 1000 * Decimal("0.000000007"))


async def test_events_land_after_clickhouse_comes_back(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    events = [event_factory(i) for i in range(300)]
    await publish(nc, events)
    failing = FailingStore(store, failures=3)
    consumer = UsageConsumer(nc, failing, batch_size=100, batch_age=0.05, retry_delay=0.2)
    await consumer.start()
    try:
        await wait_for(lambda: totals(clickhouse)[0] >= 300)
        await asyncio.sleep(0.3)
    finally:
        await consumer.stop()
    assert consumer.stats.failed_batches == 3
    assert totals(clickhouse) == (300, 300, 300 * Decimal("0.000001234"))


async def test_a_message_that_is_not_a_usage_event_does_not_block_the_others(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    await nc.jetstream().publish(subjects.usage("openai"), b'{"not": "an event"}')
    await publish(nc, [event_factory(i) for i in range(5)])
    consumer = UsageConsumer(nc, store, batch_size=100, batch_age=0.05)
    await consumer.start()
    try:
        await wait_for(lambda: consumer.stats.inserted == 5)
    finally:
        await consumer.stop()
    assert consumer.stats.invalid == 1


async def test_accounting_app_ingests_and_answers_analytics_over_nats(
    nc: Client, tmp_path: Path, nats_server: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    settings = AccountingSettings(
        NATS_URL=nats_server.url, AIGW_DATA_DIR=tmp_path, AIGW_ACCOUNTING_BATCH_AGE=0.05,
    )
    app = Accounting(settings)
    await app.start()
    try:
        await publish(nc, [event_factory(i, cost="0.25", key_id="k1") for i in range(4)])
        assert app.consumer is not None
        await wait_for(lambda: app.consumer is not None and app.consumer.stats.inserted == 4)
        reply = await nc.request(analytics_subject("summary"),
                                 json.dumps({"days": 1}).encode(), timeout=10)
        summary = json.loads(reply.data)
        assert summary["requests"] == 4
        assert summary["cost"] == "1.000000000"
        bad = await nc.request(analytics_subject("summary"),
                               json.dumps({"days": 0}).encode(), timeout=10)
        assert json.loads(bad.data)["error"]["status"] == 400
        unknown = await nc.request(analytics_subject("nope"), b"{}", timeout=10)
        assert json.loads(unknown.data)["error"]["status"] == 404
    finally:
        await app.stop()


async def test_an_event_that_breaks_the_schema_is_dropped_and_its_batch_still_lands(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    good = [event_factory(i) for i in range(5)]
    broken = json.loads(event_factory(99).model_dump_json())
    broken["prompt_tokens"] = -5  # its key parses; ClickHouse refuses the row
    await publish(nc, good[:2])
    await nc.jetstream().publish(subjects.usage("openai"), json.dumps(broken).encode())
    await publish(nc, good[2:])
    consumer = UsageConsumer(nc, store, batch_size=100, batch_age=0.2)
    await consumer.start()
    try:
        await wait_for(lambda: consumer.stats.inserted == 5)
    finally:
        await consumer.stop()
    assert consumer.stats.invalid == 1
    assert consumer.stats.failed_batches == 0
    assert totals(clickhouse)[:2] == (5, 5)


async def test_grouped_events_land_once_around_lines_that_cannot(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    events = [event_factory(i, cost="0.000000003") for i in range(250)]
    bodies = [e.model_dump_json().encode() for e in events]
    broken = json.loads(event_factory(999).model_dump_json())
    broken["prompt_tokens"] = -5  # its key parses; ClickHouse refuses the row
    await publish_group(nc, bodies[:100])
    await publish_group(nc, [*bodies[100:150], json.dumps(broken).encode(), b'{"not": 1}'])
    await publish(nc, events[150:151])  # a message of one event, as before groups
    await publish_group(nc, bodies[151:])
    await publish_group(nc, bodies[:20])  # a group replayed with other boundaries
    await publish_group(nc, [b'{"not": "an event"}'])  # nothing in it can be stored
    consumer = UsageConsumer(nc, store, batch_size=64, batch_age=0.05)
    await consumer.start()
    try:
        await wait_for(lambda: consumer.stats.received >= 270)
        deadline = asyncio.get_running_loop().time() + 10
        while not await settled(nc):
            assert asyncio.get_running_loop().time() < deadline, "messages left unacked"
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    assert totals(clickhouse) == (250, 250, 250 * Decimal("0.000000003"))
    assert (consumer.stats.inserted, consumer.stats.duplicates) == (250, 20)
    assert consumer.stats.invalid == 3


async def test_groups_wait_in_the_stream_while_clickhouse_is_away(
    nc: Client, store: UsageStore, clickhouse: Any, event_factory: Callable[..., UsageEvent]
) -> None:
    bodies = [event_factory(i).model_dump_json().encode() for i in range(120)]
    for first in range(0, 120, 40):
        await publish_group(nc, bodies[first:first + 40])
    failing = FailingStore(store, failures=2)
    consumer = UsageConsumer(nc, failing, batch_size=50, batch_age=0.05, retry_delay=0.2)
    await consumer.start()
    try:
        await wait_for(lambda: totals(clickhouse)[0] >= 120)
        await asyncio.sleep(0.3)  # anything extra would show up now
    finally:
        await consumer.stop()
    assert consumer.stats.failed_batches == 2
    assert totals(clickhouse) == (120, 120, 120 * Decimal("0.000001234"))
