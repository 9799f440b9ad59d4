"""Sustained ingest rate: usage events from JetStream through the consumer into ClickHouse.

Publishes N events to the usage stream first (a backlog, as after an outage), then starts
the consumer and times it until every event is a row in ClickHouse. Runs a nats-server
from the wheel and chDB in a temporary directory, or ``--clickhouse http://...``.

By default the events go through the workers' own publisher (``core.publisher``), which
groups what waits into one message per subject: the backlog a NATS outage leaves. With
``--per-message N`` they go N to a message (1: one event per message, as a publisher
sends them when it has never more than one waiting; a live publisher's groups hold what
arrives in its linger, ``LINGER_S``, about 14 events at 1,400 calls/s).

    .venv/bin/python -m bench.ingest --events 200000 --batch-size 10000 [--per-message 1]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nats

from accounting import migrations
from accounting.consumer import UsageConsumer
from accounting.store import UsageStore, connect
from cli.nats_server import NatsServer
from core.publisher import UsagePublisher
from core.usage_stream import ensure_usage_stream
from schemas import subjects
from schemas.event_message import group_id, join_events
from schemas.usage import UsageEvent, UsageStatus, event_id

MODELS = ("gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash")


def make_event(i: int, now: datetime) -> UsageEvent:
    request_id = f"bench-{i}"
    return UsageEvent(
        event_id=event_id(request_id, 0),
        request_id=request_id,
        ts=now - timedelta(milliseconds=i),
        key_id=f"key-{i % 50}",
        team_id=f"team-{i % 5}",
        model_alias=MODELS[i % 3],
        provider=("openai", "anthropic", "gemini")[i % 3],
        status=UsageStatus.OK,
        prompt_tokens=100 + i % 1000,
        completion_tokens=50 + i % 200,
        cost=Decimal(i % 1000) * Decimal("0.000001"),
        price_version="bench",
        latency_ms=float(i % 900),
        metadata={"bench": "1"},
    )


async def publish(url: str, count: int, per_message: int | None, window: int = 2000) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_usage_stream(js)
    now = datetime.now(UTC)
    started = time.perf_counter()
    if per_message is None:
        publisher = UsagePublisher(js, capacity=count)
        await publisher.start()
        for i in range(count):
            publisher.submit(make_event(i, now))
        if not await publisher.flush(timeout=600):
            raise SystemExit(f"{publisher.pending} events not published")
        await publisher.stop()
        per_message = 0  # published
    for first in range(0, count if per_message else 0, window):
        events = [make_event(i, now) for i in range(first, min(first + window, count))]
        groups = [same[i:i + per_message]
                  for provider in {e.provider for e in events}
                  for same in [[e for e in events if e.provider == provider]]
                  for i in range(0, len(same), per_message)]
        await asyncio.gather(*(
            js.publish(
                subjects.usage(group[0].provider),
                join_events([e.model_dump_json().encode() for e in group]),
                headers={"Nats-Msg-Id": group_id([e.event_id for e in group])},
            )
            for group in groups
        ))
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def consume(url: str, clickhouse: str, count: int, batch_size: int) -> float:
    client = connect(clickhouse)
    migrations.apply(client)
    nc = await nats.connect(url)
    consumer = UsageConsumer(
        nc, UsageStore(client), batch_size=batch_size, batch_age=0.5
    )
    started = time.perf_counter()
    await consumer.start()
    while consumer.stats.received < count:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    print(f"{consumer.stats.batches} inserts, {count / consumer.stats.batches:,.0f} events each")
    rows = client.command("SELECT count() FROM usage_events")
    await nc.close()
    client.close()
    if int(rows) != count:
        raise SystemExit(f"expected {count} rows, found {rows}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--clickhouse", default=None, help="default: chDB in a temp dir")
    parser.add_argument("--per-message", type=int, default=None,
                        help="events per message (default: as the workers' publisher groups)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aigw-ingest-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            clickhouse = args.clickhouse or f"chdb://{Path(tmp) / 'clickhouse'}"
            pub = await publish(server.url, args.events, args.per_message)
            grouping = (f"{args.per_message} per message" if args.per_message
                        else "grouped by the publisher")
            print(f"published {args.events} events ({grouping}) in {pub:.1f}s "
                  f"({args.events / pub:,.0f}/s)")
            took = await consume(server.url, clickhouse, args.events, args.batch_size)
            print(
                f"ingested {args.events} events in {took:.1f}s: "
                f"{args.events / took:,.0f} events/s (batch {args.batch_size})"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
